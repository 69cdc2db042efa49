"""trainserve: a Kubernetes-native operator for TensorFlow training and Ray Serve inference on KubeRay."""

__version__ = "0.1.0"
