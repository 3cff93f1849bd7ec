# shellcheck shell=bash
# Sourced by the scripts: Open MPI settings for laptops, CI and root shells.
if [ "$(id -u)" = "0" ]; then
    # Open MPI refuses to run as root unless told twice.
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
