"""Observability: the pipeline's custom metrics, the web page's metrics, `mmtriton top` and a
Prometheus launcher for tests. The Prometheus config, rules and Grafana dashboard live in
`monitoring/`."""
