"""Running tritonserver: its flags (one definition for the launcher and Kubernetes) and launcher."""
