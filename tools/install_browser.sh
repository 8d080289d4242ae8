#!/usr/bin/env bash
# Installs what the headless-browser test of the web demo (tests/test_web_demo.py) needs:
# Debian's Chromium and chromedriver (apt), and Gradio + Playwright for Python (pip).
# Playwright drives the system Chromium (/usr/bin/chromium); `playwright install` is never run.
#
#   bash tools/install_browser.sh            # PYTHON=python3.11 bash ... for another interpreter
set -euo pipefail

PYTHON="${PYTHON:-python}"

if [ -x /usr/bin/chromium ]; then
    echo "chromium: $(/usr/bin/chromium --version 2>/dev/null || echo present)"
else
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "install_browser.sh: no apt-get here; install Chromium as /usr/bin/chromium" >&2
        exit 1
    fi
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        if sudo -n true 2>/dev/null; then
            SUDO="sudo -n"
        else
            echo "install_browser.sh: installing chromium needs root (or password-less sudo)" >&2
            exit 1
        fi
    fi
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends \
        chromium chromium-driver
fi

# numpy<2 as in requirements.txt: without it pip may pull pandas/numpy 2 in for gradio.
if ! "$PYTHON" -c "import gradio, playwright" >/dev/null 2>&1; then
    "$PYTHON" -m pip install "numpy<2" "gradio>=6.0,<7" "playwright>=1.40"
fi
echo "install_browser.sh: browser test dependencies are installed"
