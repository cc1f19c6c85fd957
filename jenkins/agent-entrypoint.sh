#!/bin/sh
# Entry point of the pushtune agent image (jenkins/agent.Dockerfile): checks that the agent has
# its secret, gives libpq the database password, then runs the inbound agent (`jenkins-agent`
# of jenkins/inbound-agent, which reads JENKINS_URL, JENKINS_AGENT_NAME, JENKINS_WEB_SOCKET and
# JENKINS_AGENT_WORKDIR) with the secret read from a file: never in the environment, which every
# build on the agent inherits, nor on a command line.
#
#   JENKINS_AGENT_SECRET_FILE  the agent's secret (default /run/secrets/jenkins_agent_secret, a
#                              Docker secret: see docker-compose.yml). Passed as `-secret @FILE`:
#                              remoting parses its options with args4j, which reads an @FILE
#                              argument from the file (the form Jenkins' own agent page shows,
#                              core hudson/slaves/JNLPLauncher/main.jelly). JENKINS_SECRET, when
#                              set, is used instead, as the base image does.
#   PUSHTUNE_DB_PASSWORD_FILE  the PostgreSQL password (default /run/secrets/postgres_password),
#                              written to ~/.pgpass (mode 0600) so PUSHTUNE_DB needs none; absent:
#                              nothing is written (a database without a password, or SQLite).
#   JENKINS_AGENT_COMMAND      the launcher to run (default /usr/local/bin/jenkins-agent).
set -eu

# one argument that is not an option (`docker compose run agent-1 bash`): run it, as the base
# image's jenkins-agent does
if [ "$#" -eq 1 ] && [ "${1#-}" = "$1" ]; then
    exec "$@"
fi

name="${JENKINS_AGENT_NAME:-NAME}"
secret_file="${JENKINS_AGENT_SECRET_FILE:-/run/secrets/jenkins_agent_secret}"
password_file="${PUSHTUNE_DB_PASSWORD_FILE:-/run/secrets/postgres_password}"
launcher="${JENKINS_AGENT_COMMAND:-/usr/local/bin/jenkins-agent}"

if [ -z "${JENKINS_SECRET:-}" ]; then
    if [ ! -r "$secret_file" ] || [ ! -s "$secret_file" ]; then
        echo "pushtune-agent: no secret for agent $name in $secret_file; once the controller runs: pushtune jenkins agent-secret $name FILE (docs/jenkins.md, Several agents)" >&2
        exit 2
    fi
    set -- -secret "@$secret_file" "$@"
fi

if [ -r "$password_file" ] && [ -s "$password_file" ]; then
    # .pgpass fields are host:port:database:user:password; `\` and `:` in a field are escaped
    password="$(cat "$password_file")"
    escaped="$(printf '%s' "$password" | sed 's/[\\:]/\\&/g')"
    (
        umask 077
        printf '*:*:*:*:%s\n' "$escaped" > "${HOME:?}/.pgpass.new"
        mv -f "$HOME/.pgpass.new" "$HOME/.pgpass"
    )
fi

exec "$launcher" "$@"
