"""netsim."""
