#!/usr/bin/env bash
# Installs Brushwork for GIMP 3: the daemon (venv + package + VGG16 weights) and the GIMP
# plug-in in every GIMP 3.x profile found, with pyzmq importable by GIMP's own Python and a
# config telling the plug-in where the daemon listens and how to start it. Safe to run again.
#
# usage: install/install.sh [options]
#   --gimp-profile DIR  install the plug-in into this GIMP profile only (e.g. ~/.config/GIMP/3.0)
#   --plugin-only       only the plug-in files and its config: no venv, no weights
#   --service           also install a systemd user unit running the daemon (Linux)
#   --uninstall         remove what this installer added
#   --venv DIR          the daemon's venv (default ${XDG_DATA_HOME:-~/.local/share}/brushwork/venv)
#   --endpoint URL      where the daemon listens (default tcp://127.0.0.1:5580)
#   --gimp-python CMD   GIMP's Python interpreter, if it is not found automatically
#   --gimp-root DIR     GIMP runs in a chroot at DIR (its Python and, unless --gimp-profile
#                       says otherwise, the profiles of its users are found inside it)
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
DATA_HOME=${XDG_DATA_HOME:-$HOME/.local/share}
VENV=$DATA_HOME/brushwork/venv
ENDPOINT=tcp://127.0.0.1:5580
PROFILES=()
PLUGIN_ONLY=0
SERVICE=0
UNINSTALL=0
GIMP_PYTHON=
GIMP_ROOT=
VENV_MARK=.brushwork-installer    # in a venv this installer created (the only kind it deletes)
WEIGHTS_MARK=.brushwork-weights    # in that venv: the weights file it fetched
UNIT_NAME=brushwork.service
# The modules the plug-in ships: standard library + pyzmq only (see docs/ARCHITECTURE.md).
CLIENT_MODULES=(__init__ errors settings protocol client)

say() { echo "install: $*"; }
die() {
    echo "install: error: $*" >&2
    exit 1
}

while [ $# -gt 0 ]; do
    case $1 in
        --gimp-profile) PROFILES+=("${2:?--gimp-profile needs a folder}"); shift 2 ;;
        --plugin-only) PLUGIN_ONLY=1; shift ;;
        --service) SERVICE=1; shift ;;
        --uninstall) UNINSTALL=1; shift ;;
        --venv) VENV=${2:?--venv needs a folder}; shift 2 ;;
        --endpoint) ENDPOINT=${2:?--endpoint needs a URL}; shift 2 ;;
        --gimp-python) GIMP_PYTHON=${2:?--gimp-python needs a command}; shift 2 ;;
        --gimp-root) GIMP_ROOT=$(cd "${2:?--gimp-root needs a folder}" && pwd); shift 2 ;;
        -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

case $(uname -s) in
    MINGW* | MSYS* | CYGWIN*) OS=windows; VENV_BIN=Scripts; EXE=.exe ;;
    Darwin) OS=macos; VENV_BIN=bin; EXE= ;;
    *) OS=linux; VENV_BIN=bin; EXE= ;;
esac
DAEMON=$VENV/$VENV_BIN/brushwork$EXE

host_python() {
    local py
    for py in "${PYTHON:-}" python3 python; do
        [ -n "$py" ] && command -v "$py" >/dev/null && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null &&
            { echo "$py"; return; }
    done
    die "needs Python 3.11 or newer (python3); set PYTHON=/path/to/python"
}

# --- GIMP profiles ------------------------------------------------------------------------------

# Every GIMP 3.x profile of this user: Linux (native, flatpak, snap), macOS, Windows; with
# --gimp-root, those of the root's users inside it.
find_profiles() {
    local base dir
    local config=${XDG_CONFIG_HOME:-$HOME/.config}
    if [ -n "$GIMP_ROOT" ]; then
        for dir in "$GIMP_ROOT"/root/.config/GIMP/3.* "$GIMP_ROOT"/home/*/.config/GIMP/3.*; do
            [ -d "$dir" ] && echo "$dir"
        done
        return
    fi
    for base in "${GIMP3_DIRECTORY:-}" "$config/GIMP" "$HOME/.var/app/org.gimp.GIMP/config/GIMP" \
        "$HOME/snap/gimp/current/.config/GIMP" "$HOME/Library/Application Support/GIMP" \
        "${APPDATA:-/nonexistent}/GIMP"; do
        [ -n "$base" ] || continue
        if [ "$base" = "${GIMP3_DIRECTORY:-}" ]; then
            [ -d "$base" ] && echo "$base"
            continue
        fi
        for dir in "$base"/3.*; do
            [ -d "$dir" ] && echo "$dir"
        done
    done | awk '!seen[$0]++'
}

if [ ${#PROFILES[@]} = 0 ]; then
    while IFS= read -r p; do PROFILES+=("$p"); done < <(find_profiles)
    [ ${#PROFILES[@]} -gt 0 ] || [ "$UNINSTALL" = 1 ] || die "no GIMP 3 profile found${GIMP_ROOT:+ \
in $GIMP_ROOT (root/.config/GIMP/3.*, home/*/.config/GIMP/3.*)} (start GIMP 3 once so that \
it creates one, or pass --gimp-profile DIR)"
fi
if [ -n "$GIMP_ROOT" ]; then
    for p in ${PROFILES[@]+"${PROFILES[@]}"}; do
        case $(cd "$p" 2>/dev/null && pwd || echo "$p") in
            "$GIMP_ROOT"/*) ;;
            *) die "--gimp-profile $p is not inside --gimp-root $GIMP_ROOT" ;;
        esac
    done
fi

# --- GIMP's Python ------------------------------------------------------------------------------

# The path GIMP sees for a file of ours (they differ only when GIMP runs in a chroot).
gimp_path() {
    if [ -n "$GIMP_ROOT" ]; then echo "/${1#"$GIMP_ROOT"/}"; else echo "$1"; fi
}

# The interpreter GIMP runs Python plug-ins with, as a command (one word per line).
gimp_python_command() {  # $1: profile
    local interp py prefix=()
    if [ -n "$GIMP_ROOT" ]; then
        prefix=(chroot "$GIMP_ROOT" env -i HOME=/root PATH=/usr/bin:/bin LANG=C.UTF-8)
    fi
    if [ -n "$GIMP_PYTHON" ]; then
        # shellcheck disable=SC2206  # a command line on purpose, e.g. "flatpak run ... python3"
        printf '%s\n' ${prefix[@]+"${prefix[@]}"} $GIMP_PYTHON
        return
    fi
    case $1 in
        */.var/app/org.gimp.GIMP/*)
            printf '%s\n' flatpak run --command=python3 org.gimp.GIMP
            return ;;
    esac
    py=python3
    case $OS in
        macos)
            for interp in /Applications/GIMP*.app/Contents/MacOS/python3; do
                [ -x "$interp" ] && py=$interp
            done ;;
        windows)
            for interp in "/c/Program Files/GIMP 3/bin/python.exe" "${LOCALAPPDATA:-}/Programs/GIMP 3/bin/python.exe"; do
                [ -x "$interp" ] && py=$interp
            done ;;
        linux)
            # A GIMP built with an interpreter file names its Python there; Debian's has none.
            for interp in "$GIMP_ROOT"/usr/lib/gimp/3.0/interpreters/*.interp \
                "$GIMP_ROOT"/usr/lib/*/gimp/3.0/interpreters/*.interp; do
                [ -f "$interp" ] || continue
                interp=$(sed -n 's/^python3=//p' "$interp" | head -n1)
                [ -n "$interp" ] && py=$interp
            done ;;
    esac
    printf '%s\n' ${prefix[@]+"${prefix[@]}"} "$py"
}

# pip options that select wheels for GIMP's Python (its version, ABI and platform), so that
# any pip can fill the folder, whichever Python it runs on.
WHEEL_TAGS_PY='
import platform, sys, sysconfig
v = sys.version_info
print("--python-version", f"{v.major}.{v.minor}", "--implementation", "cp", "--abi", f"cp{v.major}{v.minor}")
plat = sysconfig.get_platform().replace("-", "_").replace(".", "_")
if plat.startswith("linux"):
    arch = platform.machine()
    libc, version = platform.libc_ver()
    major, minor = (int(x) for x in (version or "2.17").split(".")[:2])
    if libc == "glibc":
        plats = [f"manylinux_{major}_{m}_{arch}" for m in range(minor, 16, -1)]
        plats.append(f"manylinux2014_{arch}")
    else:
        plats = [f"musllinux_1_{m}_{arch}" for m in range(2, -1, -1)]
else:
    plats = [plat]
for p in plats:
    print("--platform", p)
'

# Make `import zmq` work in GIMP's Python: its own pyzmq if it has one, else ours in lib/.
provide_zmq() {  # $1: profile, $2: the plug-in's lib folder
    local lib=$2 pip tags line gpy=()
    while IFS= read -r line; do gpy+=("$line"); done < <(gimp_python_command "$1")
    "${gpy[@]}" -c 'import sys' 2>/dev/null ||
        die "cannot run GIMP's Python (${gpy[*]}); pass --gimp-python PATH"
    if "${gpy[@]}" -c 'import zmq' 2>/dev/null; then
        say "GIMP's Python imports zmq already"
        rm -rf "$lib"/zmq "$lib"/pyzmq*
        return
    fi
    local check='import sys; sys.path.insert(0, sys.argv[1]); import zmq'
    if "${gpy[@]}" -c "$check" "$(gimp_path "$lib")" >/dev/null 2>&1; then
        say "pyzmq for GIMP's Python is already in $lib"
        return
    fi
    tags=$("${gpy[@]}" -c "$WHEEL_TAGS_PY") || die "cannot ask GIMP's Python (${gpy[*]}) its version"
    pip=$(pip_command) || die "needs pip to fetch pyzmq for GIMP's Python \
(install python3-pip, or run without --plugin-only to create the venv first)"
    say "installing pyzmq for GIMP's Python into $lib"
    rm -rf "$lib"/zmq "$lib"/pyzmq*
    # shellcheck disable=SC2086  # word splitting of the pip commands and wheel tags on purpose
    $pip install --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        --target "$lib" $tags "pyzmq>=25" || die "pip could not fetch pyzmq for GIMP's Python"
    "${gpy[@]}" -c "$check" "$(gimp_path "$lib")" || die "GIMP's Python still cannot import zmq from $lib"
}

pip_command() {
    local py
    for py in "$VENV/$VENV_BIN/python$EXE" "$(host_python 2>/dev/null)"; do
        [ -n "$py" ] && "$py" -m pip --version >/dev/null 2>&1 && { echo "$py -m pip"; return; }
    done
    return 1
}

# --- The plug-in --------------------------------------------------------------------------------

write_config() {  # $1: file
    local daemon=$DAEMON
    # Windows GIMP runs the daemon command itself: it needs C:\... paths, not Git Bash's /c/...
    [ "$OS" != windows ] || daemon=$(cygpath -w "$DAEMON")
    "$(host_python)" - "$1" "$ENDPOINT" "$daemon" <<'EOF'
import json, sys
path, endpoint, daemon = sys.argv[1:]
config = {
    "endpoint": endpoint,
    "daemon_command": [daemon, "serve", "--bind", endpoint],
    "autostart": True,
}
with open(path, "w", encoding="utf-8") as f:
    json.dump(config, f, indent=2)
    f.write("\n")
EOF
}

install_plugin() {  # $1: profile
    local dir=$1/plug-ins/brushwork m
    say "plug-in -> $dir"
    mkdir -p "$dir/lib"
    rm -rf "$dir/lib/brushwork" "$dir/__pycache__"
    mkdir -p "$dir/lib/brushwork"
    rm -f "$dir"/brushwork_*.py
    install -m 755 "$REPO/plugin/brushwork/brushwork.py" "$dir/brushwork.py"
    install -m 644 "$REPO"/plugin/brushwork/brushwork_*.py "$dir/"  # its modules
    rm -rf "$dir/styles"
    mkdir -p "$dir/styles"
    install -m 644 "$REPO"/plugin/brushwork/styles/*.jpg "$dir/styles/"  # bundled paintings
    for m in "${CLIENT_MODULES[@]}"; do
        install -m 644 "$REPO/daemon/brushwork/$m.py" "$dir/lib/brushwork/$m.py"
    done
    provide_zmq "$1" "$dir/lib"
    write_config "$dir/brushwork.json"
}

# --- The daemon ---------------------------------------------------------------------------------

install_daemon() {
    local py weights
    if [ ! -x "$VENV/$VENV_BIN/python$EXE" ]; then
        py=$(host_python)
        say "creating the venv $VENV"
        mkdir -p "$(dirname "$VENV")"
        "$py" -m venv "$VENV"
        touch "$VENV/$VENV_MARK"
    fi
    say "installing the brushwork package into $VENV (torch is large: minutes the first time)"
    "$VENV/$VENV_BIN/python$EXE" -m pip install --quiet --disable-pip-version-check \
        -c "$REPO/install/constraints.txt" "$REPO[offline]"
    if "$DAEMON" weights verify >/dev/null 2>&1; then
        say "VGG16 weights already there: $("$DAEMON" weights path)"
    else
        weights=$("$DAEMON" weights path)
        "$DAEMON" weights fetch
        [ -f "$VENV/$VENV_MARK" ] && echo "$weights" >"$VENV/$WEIGHTS_MARK"
    fi
}

unit_file() { echo "${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user/$UNIT_NAME"; }

install_service() {
    [ "$OS" = linux ] || die "--service makes a systemd user unit: Linux only"
    local unit
    unit=$(unit_file)
    mkdir -p "$(dirname "$unit")"
    cat >"$unit" <<EOF
# Written by Brushwork's install/install.sh; removed by install.sh --uninstall.
[Unit]
Description=Brushwork neural style transfer daemon

[Service]
ExecStart="$DAEMON" serve --bind $ENDPOINT
Restart=on-failure

[Install]
WantedBy=default.target
EOF
    if systemctl --user daemon-reload 2>/dev/null && systemctl --user enable --now "$UNIT_NAME"; then
        say "daemon service $UNIT_NAME enabled and started"
    else
        say "wrote $unit; no systemd user session here: run 'systemctl --user enable --now $UNIT_NAME' in one"
    fi
}

uninstall() {
    local p unit weights
    for p in ${PROFILES[@]+"${PROFILES[@]}"}; do
        if [ -d "$p/plug-ins/brushwork" ]; then
            rm -rf "$p/plug-ins/brushwork"
            say "removed the plug-in from $p"
        fi
    done
    unit=$(unit_file)
    if [ -f "$unit" ] && grep -q "Brushwork's install/install.sh" "$unit"; then
        systemctl --user disable --now "$UNIT_NAME" 2>/dev/null || true
        rm -f "$unit"
        systemctl --user daemon-reload 2>/dev/null || true
        say "removed the service $UNIT_NAME"
    fi
    if [ -f "$VENV/$VENV_MARK" ]; then
        if [ -f "$VENV/$WEIGHTS_MARK" ]; then
            weights=$(cat "$VENV/$WEIGHTS_MARK")
            rm -f "$weights"
            say "removed the weights $weights"
        fi
        rm -rf "$VENV"
        rmdir "$(dirname "$VENV")" 2>/dev/null || true  # the brushwork data folder, if empty
        say "removed the venv $VENV"
    fi
}

if [ "$UNINSTALL" = 1 ]; then
    uninstall
    exit 0
fi
[ "$PLUGIN_ONLY" = 1 ] || install_daemon
for p in ${PROFILES[@]+"${PROFILES[@]}"}; do
    install_plugin "$p"
done
[ "$SERVICE" = 0 ] || install_service
say "done: in GIMP 3, Filters > Artistic > Neural Style Transfer... (daemon: $ENDPOINT)"
