"""What the client and the servers both speak: the signaling wire format (`schema`) and a small
STUN/TURN codec and client (`stun`). It depends on nothing of either side, so the client never
imports the server package and the server never imports the client."""
