"""Local stand-ins that speak the real wire protocols (forge, LLM server, kubelet, syncer) and, until each
lands, in-process fakes of the ports. Used by the demo and the tests; never by production wiring."""
