"""The security suite: each test pins a hole that a review or a live probe found, closed."""
