"""p2pstack nat package."""
