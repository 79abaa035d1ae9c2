#!/bin/sh
# Create or update a Mosquitto password file for muto, one "username password" per line
# on stdin: the cloud user (muto-cloud) and one user per vehicle, named by its vehicle id.
#
#   printf '%s\n' "muto-cloud $CLOUD_PW" "v1 $V1_PW" | deploy/mosquitto/add-users.sh passwd
#
# Re-running with a user that exists changes its password. Blank lines and # comments are
# skipped. The file is created readable by its owner only: with the eclipse-mosquitto
# image, chown it to the broker's user (1883) before mounting it.
set -eu
file=${1:?usage: add-users.sh PASSWORD_FILE < users}
umask 077
[ -e "$file" ] || : >"$file"
while read -r user password; do
    case $user in '' | '#'*) continue ;; esac
    if [ -z "$password" ]; then
        echo "add-users.sh: no password for $user" >&2
        exit 2
    fi
    mosquitto_passwd -b "$file" "$user" "$password"
done
