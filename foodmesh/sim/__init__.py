"""The simulated city: its seed data, the simulator, and order history for ETA training."""
