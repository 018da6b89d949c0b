#!/usr/bin/env bash
# Installs what the code-reward sandbox (repirl_jax/rewards/sandbox.py) needs, from Debian's packages:
#   bubblewrap  - namespaces (PID, network, mount, IPC, UTS) and a minimal read-only root for the program
#   util-linux  - setpriv, to drop to a dedicated unprivileged uid inside the sandbox
#   python3     - the interpreter that runs the untrusted code (/usr/bin/python3, stdlib only)
# Idempotent: installs only what is missing, then checks that a sandbox can actually start.
# Usage: bash tools/setup_sandbox.sh      (as root; CI=true makes a failed self-check an error)
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
    echo "setup_sandbox: not root; the sandbox itself needs root to drop to its own uids" >&2
fi

need=()
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
[ -x /usr/bin/setpriv ] || need+=(util-linux)
[ -x /usr/bin/python3 ] || need+=(python3)

if [ "${#need[@]}" -gt 0 ]; then
    echo "setup_sandbox: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Self-check: a process in fresh PID/network/mount namespaces, as an unprivileged uid, sees only /usr.
if out=$($SUDO bwrap --unshare-pid --unshare-net --die-with-parent --clearenv \
        --ro-bind /usr /usr --symlink usr/lib /lib --symlink usr/lib64 /lib64 --symlink usr/bin /bin \
        --proc /proc --dev /dev --tmpfs /tmp --cap-add CAP_SETUID --cap-add CAP_SETGID \
        /usr/bin/setpriv --reuid=65534 --regid=65534 --clear-groups --no-new-privs -- \
        /usr/bin/python3 -I -c 'import os; print("uid", os.getuid(), "pid", os.getpid(), "root", sorted(os.listdir("/")))' 2>&1); then
    echo "setup_sandbox: ok ($(bwrap --version)): $out"
else
    echo "setup_sandbox: the sandbox cannot start here: $out" >&2
    echo "setup_sandbox: code rewards will refuse to run (unless allow_unsandboxed=True)" >&2
    case "${CI:-}" in
        ""|0|false|False|FALSE) exit 0 ;;
        *) exit 1 ;;
    esac
fi
