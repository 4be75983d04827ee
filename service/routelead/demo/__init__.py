"""The two-command demo: simulated buyers on loopback and a stream of sample leads."""
