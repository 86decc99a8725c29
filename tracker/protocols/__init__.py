"""Pure decoders of the phone apps' wire formats into the contract's fix objects.

Each decoder takes what the app sent (query and form fields, a JSON body) and returns an `AppRequest`:
the token the app carries and, in the app's order, one fix object per entry or the reason the entry is
none. Nothing here authenticates, validates ranges or stores: the edge (`tracker.api.ingest_http`) does
that through `Ingestor.accept`, the path every fix takes. Each decoder is tested against the app's own
published requests (`tests/test_protocols.py`).
"""
