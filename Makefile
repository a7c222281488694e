# segments — PGXS build.  `make test` and `make demo` are the two commands the
# README documents; both work on a fresh Debian bookworm machine (they install
# the packages they need) and run everything on a throwaway cluster.

EXTENSION   = segments
MODULE_big  = segments
OBJS        = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))
DATA        = $(sort $(wildcard sql/segments--*.sql))
DOCS        =

# pg_regress inputs: sql/<name>.sql, outputs expected/<name>.out
REGRESS      = $(patsubst sql/%.sql,%,$(sort $(filter-out sql/segments--%,$(wildcard sql/*.sql))))
REGRESS_OPTS = --load-extension=segments
# isolation specs and their outputs live under test/isolation
ISOLATION      = $(patsubst test/isolation/specs/%.spec,%,$(sort $(wildcard test/isolation/specs/*.spec)))
ISOLATION_OPTS = --inputdir=test/isolation --load-extension=segments
# TAP tests (PostgreSQL::Test::Cluster) live in test/t
TAP_TESTS    = 1
PROVE_TESTS  = $(sort $(wildcard test/t/*.pl))
PROVE_FLAGS  = -I ./test/perl

PG_CPPFLAGS = -I$(srcdir)/src
PG_CFLAGS   = -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare

PG_CONFIG ?= $(firstword $(wildcard /usr/lib/postgresql/15/bin/pg_config) pg_config)
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)

.DEFAULT_GOAL := all

# The README's commands; they run before PGXS exists on a fresh machine.
.PHONY: test demo bench
test:
	@bash test/harness test
demo:
	@bash test/harness demo
bench:
	@bash test/harness bench $(BENCH)

ifneq ($(PGXS),)
include $(PGXS)

# One target per suite so that a failing suite does not hide the next one.
.PHONY: installcheck-regress installcheck-isolation installcheck-tap
installcheck-regress: submake $(REGRESS_PREP)
	$(pg_regress_installcheck) $(REGRESS_OPTS) $(REGRESS)
installcheck-isolation: submake
	$(pg_isolation_regress_installcheck) $(ISOLATION_OPTS) $(ISOLATION)
installcheck-tap:
	$(prove_installcheck)
else
all install installcheck:
	@echo "pg_config with PGXS not found: install postgresql-server-dev-15 (make test does it for you)" >&2; exit 1
endif
