"""Local stand-ins that speak the real wire protocols (forge, LLM server, kubelet, syncer) and, until each
lands, in-process fakes of the ports, and the embedded demo. Used by the demo, the benchmarks and the tests;
never by production wiring. Its own distribution, ``promptship-sandbox`` (sandbox/pyproject.toml): the product
wheel and image carry none of it, and product code imports it only after
``promptship.commands._sandbox.require_sandbox``."""
