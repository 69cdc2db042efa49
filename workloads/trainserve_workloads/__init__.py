"""The code that runs inside Ray clusters: training (Ray Train + TensorFlow) and serving (Ray Serve)."""
