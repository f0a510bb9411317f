# Citus 14 (PostgreSQL 18) with pgvector, for the `citus` profile of docker-compose.yml.
# The official Citus image is built on the official postgres image, whose PGDG apt source
# carries pgvector for the same major version.
FROM citusdata/citus:14.0
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-18-pgvector \
 && rm -rf /var/lib/apt/lists/*
