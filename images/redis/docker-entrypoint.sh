#!/bin/sh
# What the public redis image's entrypoint does, for the same command lines: options or a
# config file alone mean redis-server; started as root, /data is handed to redis and the
# server drops to redis (999). A pod that sets runAsUser (the operator's) skips all of it.
set -e
case "$1" in
  -*|*.conf) set -- redis-server "$@" ;;
esac
if [ "$1" = redis-server ] && [ "$(id -u)" = 0 ]; then
  find . \! -user redis -exec chown redis '{}' +
  exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi
# Files redis writes (AOF, RDB, nodes.conf) are readable by its user only.
umask 0077
exec "$@"
