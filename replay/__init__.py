"""matchreplay's event-sourced core: events, codec, rules, state, store, replay, projections.

Pure and free of network code; the server and the client SDK build on it.
"""
