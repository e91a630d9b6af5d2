#!/bin/sh
# Stands in for NGC's /opt/nvidia/nvidia_entrypoint.sh, which prints a banner, sets up CUDA
# forward compatibility on data-center drivers (nothing to do without a GPU) and then execs
# its arguments: the container's command runs as PID "1" of the container, as in the image.
exec "$@"
