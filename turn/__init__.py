"""TURN: coturn configuration and the short-lived credentials handed to peers."""
