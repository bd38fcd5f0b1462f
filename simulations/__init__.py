"""p2pstack simulations package."""
