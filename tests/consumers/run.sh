#!/usr/bin/env bash
# Installs the build into a temporary prefix (meson install --destdir) and
# builds and runs three consumers against it, as users outside this tree
# would: a C program with pkg-config alone (shared, then static), a CMake
# project (find_package), and a Python script (PYTHONPATH into the prefix).
# Each takes a lock a SIGKILLed child held and must be told it was abandoned.
#
# Usage: run.sh BUILD_DIR    (tests/meson.build runs it)
set -euo pipefail
build=$(realpath "$1")
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dest=$work/dest

meson install -C "$build" --destdir "$dest" --no-rebuild --quiet >/dev/null
prefix=$(meson introspect "$build" --buildoptions | /usr/bin/python3 -c \
  'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"]=="prefix"))')
libdir=$(meson introspect "$build" --buildoptions | /usr/bin/python3 -c \
  'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"]=="libdir"))')
root=$dest$prefix
[[ $libdir = /* ]] || libdir=$prefix/$libdir
export PKG_CONFIG_SYSROOT_DIR=$dest
export PKG_CONFIG_LIBDIR=$dest$libdir/pkgconfig:/usr/lib/x86_64-linux-gnu/pkgconfig:/usr/share/pkgconfig

echo "== man pages and bash completion installed"
for page in locktable locktable-init locktable-ls locktable-run locktable-history locktable-recover \
            locktable-check locktable-stat locktable-rm locktable-metrics locktable-top; do
  test -s "$root/share/man/man1/$page.1" || { echo "missing $root/share/man/man1/$page.1" >&2; exit 1; }
done
test -s "$root/share/bash-completion/completions/locktable.bash" || { echo "missing bash completion" >&2; exit 1; }

echo "== C, pkg-config, shared"
cc -Wall -Wextra -Werror -o "$work/c_shared" "$here/c/abandoned.c" $(pkg-config --cflags --libs locktable)
LD_LIBRARY_PATH=$dest$libdir "$work/c_shared" "$work/t_c"

echo "== C, pkg-config --static"
cc -Wall -Wextra -Werror -o "$work/c_static" "$here/c/abandoned.c" $(pkg-config --cflags locktable) \
  -Wl,-Bstatic -llocktable -Wl,-Bdynamic $(pkg-config --static --libs locktable | sed 's/-llocktable//')
if ldd "$work/c_static" | grep -q liblocktable; then echo "static build links liblocktable.so" >&2; exit 1; fi
"$work/c_static" "$work/t_cs"

echo "== CMake, find_package"
cmake -S "$here/cmake" -B "$work/cmake" -DCMAKE_PREFIX_PATH="$root" >/dev/null
cmake --build "$work/cmake" >/dev/null
LD_LIBRARY_PATH=$dest$libdir "$work/cmake/abandoned" "$work/t_cmake"
"$work/cmake/abandoned_static" "$work/t_cmake_static"

echo "== Python, PYTHONPATH into the prefix"
module=$(find "$root" -name 'locktable*.so' -path '*-packages*' | head -n 1)
if [ -z "$module" ]; then echo "the Python module was not installed under $root" >&2; exit 1; fi
PYTHONPATH=$(dirname "$module") /usr/bin/python3 "$here/python/abandoned.py" "$work/t_py"
