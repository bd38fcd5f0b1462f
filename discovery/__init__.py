"""p2pstack discovery package."""
