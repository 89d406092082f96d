"""Models: the XLM-R encoder, the Hyper-X hypernetwork, adapters and task heads."""
