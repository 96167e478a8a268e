"""journeymap: customer-journey intelligence for e-commerce."""
