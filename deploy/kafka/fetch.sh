#!/usr/bin/env bash
# Fetch the pinned Apache Kafka broker (deploy/kafka/pom.xml) from Maven Central into a cache and print the
# directory of its jars. Installs OpenJDK 17 and Maven from Debian first when they are missing (as root).
# The cache is keyed by the pom's hash, so a second run costs a second; SKYSTREAM_KAFKA_CACHE moves it
# (default ~/.cache/skystream/kafka). Usage: deploy/kafka/fetch.sh   (prints the jar directory on stdout)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${SKYSTREAM_KAFKA_CACHE:-$HOME/.cache/skystream/kafka}
key=$(sha256sum "$here/pom.xml" | cut -c1-16)
libs="$cache/$key/libs"
if [ -f "$libs/.complete" ]; then
  echo "$libs"
  exit 0
fi

need=()
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[kafka] installing ${need[*]} from Debian" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "[kafka] needs ${need[*]} (Java 17 and Maven); install them, or run this as root on Debian" >&2
    exit 1
  fi
fi
java_major=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/ *java.specification.version = //p' | cut -d. -f1)
if [ "${java_major:-0}" -lt 17 ]; then
  echo "[kafka] Kafka 4 needs Java 17 or newer; found $java_major (set JAVA_HOME or PATH to a newer one)" >&2
  exit 1
fi

echo "[kafka] fetching Apache Kafka $(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml") from Maven Central into $libs" >&2
rm -rf "$libs"
mkdir -p "$libs"
mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$libs" >&2
ls "$libs"/kafka_2.13-*.jar >/dev/null
touch "$libs/.complete"
echo "$libs"
