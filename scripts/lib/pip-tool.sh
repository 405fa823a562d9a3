# Sourced by the offline checks that run a pinned PyPI tool
# (check-openapi.sh, check-compose.sh).
#
# pip_tool DEFAULT_DIR DIR_VARIABLE PACKAGE==VERSION: installs the package
# (with its dependencies) once into DIR/py — DIR is $DIR_VARIABLE when set,
# else DEFAULT_DIR under ~/.cache — and prints DIR. A second call with the
# same pin does nothing; another pin installs afresh.
pip_tool() {
  local var="$2" spec="$3"
  local dir="${!var:-${XDG_CACHE_HOME:-$HOME/.cache}/$1}"
  local stamp="$dir/.installed-${spec##*==}"
  if [ ! -f "$stamp" ]; then
    rm -rf "$dir"
    mkdir -p "$dir/py"
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check \
      --upgrade --target "$dir/py" "$spec" >&2
    touch "$stamp"
  fi
  echo "$dir"
}
