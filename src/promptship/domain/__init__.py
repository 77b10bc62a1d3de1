"""Pure logic of promptship: requests, verdicts, records, routing policy, the sensitive-data gate, costs, KPIs.

Nothing here does I/O or imports Prefect, httpx or a vendor SDK.
"""
