/*-------------------------------------------------------------------------
 *
 * rules.c
 *	  Checked segment rules: a shop owner's boolean expression over the
 *	  columns of a facts relation, vetted on the server's own parse tree.
 *
 * A rule is stored as text and later pasted into SQL that a scheduled tick
 * runs, often as a superuser.  So the check is a security boundary, and it
 * never looks at the text with patterns: the text goes through the server's
 * parser and parse analysis against the target relation, and only the
 * analysed tree is judged and deparsed.  What is stored is the deparsed
 * tree, not what the owner typed, so comments, odd quoting and escapes
 * cannot survive into the evaluator.
 *
 * The policy, enforced on the analysed tree:
 *
 *	- one expression, no clauses, no subqueries, parameters, aggregates,
 *	  window functions or set-returning functions; only a fixed list of
 *	  expression node types (see rule_check_walker);
 *	- columns of the target only, never system columns or the whole row;
 *	- every function, operator, type and collation lives in pg_catalog or
 *	  in this extension's schema, so nothing another role can create or
 *	  replace is ever called, whatever search_path the owner had;
 *	- functions are immutable or stable, return no set, take and return no
 *	  plumbing pseudo-types, and are not on the deny list of functions that
 *	  read server state, the clock, the catalogs or files (rule_deny);
 *	- of this extension's own functions only the C ones that are not
 *	  internal helpers (no leading underscore), since SQL and PL/pgSQL ones
 *	  run queries;
 *	- no object identifier types (regclass and friends): converting to or
 *	  from them looks up the catalogs;
 *	- at most RULE_MAX_BYTES bytes and RULE_MAX_DEPTH levels of nesting;
 *	- the stored text holds no backslash, so it reads the same whatever
 *	  standard_conforming_strings the evaluating session has (rule_deparse).
 *
 * Nothing the owner wrote is executed here.  Parse analysis does convert
 * typed literals with their type's input function (that is how '45' becomes
 * an integer), exactly as for a CHECK constraint; casts to object identifier
 * types and to types outside the trusted schemas are refused on the raw
 * tree before analysis, so those input functions never run.
 *
 *-------------------------------------------------------------------------
 */
#include "segments.h"

#include <math.h>
#include <stdlib.h>

#include "access/htup_details.h"
#include "access/relation.h"
#include "catalog/objectaddress.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_language.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_operator.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "nodes/parsenodes.h"
#include "optimizer/optimizer.h"
#include "parser/parse_coerce.h"
#include "parser/parse_collate.h"
#include "parser/parse_expr.h"
#include "parser/parse_node.h"
#include "parser/parse_relation.h"
#include "parser/parse_type.h"
#include "parser/parser.h"
#include "parser/scansup.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/rel.h"
#include "utils/ruleutils.h"
#include "utils/syscache.h"

PG_FUNCTION_INFO_V1(segments_rule_compile);

/* Longest rule text accepted, in bytes */
#define RULE_MAX_BYTES 10000

/* Deepest expression tree accepted, counting expression nodes */
#define RULE_MAX_DEPTH 100

/* search_path under which rules are deparsed and later evaluated */
#define RULE_SEARCH_PATH "pg_catalog, pg_temp"

/* State of one check, shared by the raw and the analysed walker */
typedef struct RuleCheck
{
	ParseState *pstate;			/* source text for error positions */
	Oid			extnsp;			/* this extension's schema */
	Oid			self;			/* rule_compile itself */
	int			depth;			/* current nesting, in expression nodes */
	Bitmapset  *columns;		/* attnums the rule reads */
	Bitmapset  *time_columns;	/* attnums named in time_columns */
	List	   *windows;		/* day counts (int) where time rules change */
	List	   *threshold_cols; /* attnum (int) of a time column compared ... */
	List	   *threshold_exprs;	/* ... with this expression of other columns */
} RuleCheck;

/*
 * Functions of pg_catalog a rule may not call although they are immutable or
 * stable.  A rule is a function of one customer's facts; these read
 * something else: server or session state, the catalogs, files, the clock.
 * Matching is on the name alone (all overloads), by prefix where marked.
 *
 * Everything named pg_* is refused: that prefix marks the administration and
 * introspection functions (files, sleeping, locks, statistics, backends,
 * catalog definitions), and no rule over customer facts needs one, so the
 * allow list for pg_* is deliberately empty.
 */
typedef struct RuleDeny
{
	const char *name;
	bool		prefix;
	const char *why;
} RuleDeny;

#define RULE_WHY_ADMIN "Functions named pg_* administer or inspect the server."
#define RULE_WHY_CATALOG "It reads the system catalogs, not customer facts."
#define RULE_WHY_STATE "It reads session or server state, not customer facts."
#define RULE_WHY_SQL "It runs SQL."
#define RULE_WHY_CLOCK "Rules see time only through the as-of columns such as days_since_last_order, so that evaluation as of any time agrees and the scheduler knows when a rule changes."

static const RuleDeny rule_deny[] = {
	{"pg_", true, RULE_WHY_ADMIN},
	{"has_", true, RULE_WHY_CATALOG},	/* has_*_privilege */
	{"to_reg", true, RULE_WHY_CATALOG},
	{"format_type", false, RULE_WHY_CATALOG},
	{"oidvectortypes", false, RULE_WHY_CATALOG},
	{"obj_description", false, RULE_WHY_CATALOG},
	{"col_description", false, RULE_WHY_CATALOG},
	{"shobj_description", false, RULE_WHY_CATALOG},
	{"row_security_active", false, RULE_WHY_CATALOG},
	{"satisfies_hash_partition", false, RULE_WHY_CATALOG},
	{"fmgr_", true, RULE_WHY_CATALOG},	/* validators load code */
	{"lo_", true, "Large object functions read stored objects."},
	{"txid_", true, RULE_WHY_STATE},
	{"binary_upgrade_", true, RULE_WHY_STATE},
	{"current_setting", false, RULE_WHY_STATE},
	{"set_config", false, RULE_WHY_STATE},
	{"current_database", false, RULE_WHY_STATE},
	{"current_schema", false, RULE_WHY_STATE},
	{"current_schemas", false, RULE_WHY_STATE},
	{"current_user", false, RULE_WHY_STATE},
	{"current_role", false, RULE_WHY_STATE},
	{"session_user", false, RULE_WHY_STATE},
	{"current_query", false, RULE_WHY_STATE},
	{"getpgusername", false, RULE_WHY_STATE},
	{"getdatabaseencoding", false, RULE_WHY_STATE},
	{"get_current_ts_config", false, RULE_WHY_STATE},
	{"inet_client_addr", false, RULE_WHY_STATE},
	{"inet_client_port", false, RULE_WHY_STATE},
	{"inet_server_addr", false, RULE_WHY_STATE},
	{"inet_server_port", false, RULE_WHY_STATE},
	{"version", false, RULE_WHY_STATE},
	{"mxid_age", false, RULE_WHY_STATE},
	{"nextval", false, RULE_WHY_STATE},
	{"currval", false, RULE_WHY_STATE},
	{"lastval", false, RULE_WHY_STATE},
	{"setval", false, RULE_WHY_STATE},
	{"query_to_xml", true, RULE_WHY_SQL},
	{"cursor_to_xml", true, RULE_WHY_SQL},
	{"table_to_xml", true, RULE_WHY_SQL},
	{"schema_to_xml", true, RULE_WHY_SQL},
	{"database_to_xml", true, RULE_WHY_SQL},
	{"ts_stat", false, RULE_WHY_SQL},
	{"ts_rewrite", false, RULE_WHY_SQL},
	{"now", false, RULE_WHY_CLOCK},
	{"statement_timestamp", false, RULE_WHY_CLOCK},
	{"transaction_timestamp", false, RULE_WHY_CLOCK},
	{"clock_timestamp", false, RULE_WHY_CLOCK},
	{"timeofday", false, RULE_WHY_CLOCK},
};

static bool rule_raw_walker(Node *node, RuleCheck *ctx);
static bool rule_check_walker(Node *node, RuleCheck *ctx);

/*
 * Error positions of the parser and of our checks point into the rule, not
 * into the query that called rule_compile(); report them as an internal
 * query so that psql shows the caret under the rule.
 */
static void
rule_error_callback(void *arg)
{
	int			pos = geterrposition();

	if (pos > 0)
	{
		errposition(0);
		internalerrposition(pos);
		internalerrquery((const char *) arg);
	}
}

/* Position of a node in the rule, for ereport */
static int
rule_errposition(RuleCheck *ctx, int location)
{
	return parser_errposition(ctx->pstate, location);
}

/*
 * Object identifier types convert by looking names up in the catalogs, and
 * their values name catalog objects; a rule has no business with either.
 */
static bool
rule_is_reg_type(Oid typid)
{
	switch (typid)
	{
		case REGPROCOID:
		case REGPROCEDUREOID:
		case REGOPEROID:
		case REGOPERATOROID:
		case REGCLASSOID:
		case REGCOLLATIONOID:
		case REGTYPEOID:
		case REGROLEOID:
		case REGNAMESPACEOID:
		case REGCONFIGOID:
		case REGDICTIONARYOID:
			return true;
		default:
			return false;
	}
}

/* Is nspid one of the two schemas whose objects a rule may use? */
static bool
rule_trusted_namespace(RuleCheck *ctx, Oid nspid)
{
	return nspid == PG_CATALOG_NAMESPACE || nspid == ctx->extnsp;
}

/*
 * Every value a rule handles has a type from pg_catalog or our schema and
 * no object identifier type: a type from another schema can be dropped and
 * recreated by its owner after the rule is stored, and its I/O and
 * comparison functions are not ours to vouch for.
 */
static void
rule_check_type(RuleCheck *ctx, Oid typid, int location)
{
	Oid			elemtype = get_element_type(typid);
	HeapTuple	tp;
	Oid			nspid;

	if (rule_is_reg_type(typid) ||
		(OidIsValid(elemtype) && rule_is_reg_type(elemtype)))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("type %s is not allowed in segment rules",
						format_type_be(typid)),
				 errdetail("Object identifier types such as regclass look up the system catalogs."),
				 rule_errposition(ctx, location)));

	tp = SearchSysCache1(TYPEOID, ObjectIdGetDatum(typid));
	if (!HeapTupleIsValid(tp))
		elog(ERROR, "cache lookup failed for type %u", typid);
	nspid = ((Form_pg_type) GETSTRUCT(tp))->typnamespace;
	ReleaseSysCache(tp);

	if (!rule_trusted_namespace(ctx, nspid))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("type %s is not allowed in segment rules",
						format_type_be_qualified(typid)),
				 errdetail("Only types of schemas pg_catalog and %s may be used.",
						   get_namespace_name(ctx->extnsp)),
				 rule_errposition(ctx, location)));
}

/*
 * Pseudo-types other than the polymorphic ones, "any" and record mark
 * plumbing: type I/O (cstring), planner and index support (internal),
 * triggers and handlers, or a call made only for its side effect (void).
 */
static bool
rule_is_plumbing_type(Oid typid)
{
	if (get_typtype(typid) != TYPTYPE_PSEUDO)
		return false;
	return !(IsPolymorphicType(typid) || typid == ANYOID || typid == RECORDOID);
}

/* The deny list entry matching a pg_catalog function, or NULL */
static const RuleDeny *
rule_denied(const char *name)
{
	for (size_t i = 0; i < lengthof(rule_deny); i++)
	{
		const RuleDeny *d = &rule_deny[i];

		if (d->prefix ? strncmp(name, d->name, strlen(d->name)) == 0
			: strcmp(name, d->name) == 0)
			return d;
	}
	return NULL;
}

/*
 * The gate every function a rule calls goes through, whether called by name
 * or behind an operator.  It decides on the catalog entry of the function
 * the parser resolved, so a look-alike lower() in a schema ahead of
 * pg_catalog in search_path is refused rather than trusted for its name.
 */
static void
rule_check_function(RuleCheck *ctx, Oid funcid, int location)
{
	HeapTuple	tp;
	Form_pg_proc proc;
	const char *name;
	const RuleDeny *deny = NULL;
	const char *why = NULL;
	int			sqlstate = ERRCODE_INSUFFICIENT_PRIVILEGE;
	Oid			plumbing = InvalidOid;

	tp = SearchSysCache1(PROCOID, ObjectIdGetDatum(funcid));
	if (!HeapTupleIsValid(tp))
		elog(ERROR, "cache lookup failed for function %u", funcid);
	proc = (Form_pg_proc) GETSTRUCT(tp);
	name = NameStr(proc->proname);

	if (!rule_trusted_namespace(ctx, proc->pronamespace))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("function %s is not allowed in segment rules",
						format_procedure_qualified(funcid)),
				 errdetail("Only functions of schemas pg_catalog and %s may be used, so that no other role can change what a rule runs.",
						   get_namespace_name(ctx->extnsp)),
				 errhint("Check search_path: a schema ahead of pg_catalog may hold a function of the same name."),
				 rule_errposition(ctx, location)));

	if (proc->pronamespace == PG_CATALOG_NAMESPACE)
	{
		deny = rule_denied(name);
		if (deny != NULL)
			why = deny->why;
		else if (strcmp(name, "age") == 0 && proc->pronargs == 1)
			why = RULE_WHY_CLOCK;	/* age(x) measures from now */
	}
	else if (proc->prolang != ClanguageId || name[0] == '_' ||
			 funcid == ctx->self)
		why = "Of this extension's functions only the C functions that are not internal helpers may be used.";

	if (why == NULL && proc->provolatile == PROVOLATILE_VOLATILE)
	{
		sqlstate = ERRCODE_FEATURE_NOT_SUPPORTED;
		why = "A rule must give the same answer for the same facts, so its functions must be immutable or stable.";
	}
	if (why == NULL && proc->proretset)
	{
		sqlstate = ERRCODE_FEATURE_NOT_SUPPORTED;
		why = "A rule computes one value per customer, so its functions must not return sets.";
	}
	if (why == NULL)
	{
		if (rule_is_plumbing_type(proc->prorettype))
			plumbing = proc->prorettype;
		for (int i = 0; i < proc->pronargs && !OidIsValid(plumbing); i++)
			if (rule_is_plumbing_type(proc->proargtypes.values[i]))
				plumbing = proc->proargtypes.values[i];
	}
	ReleaseSysCache(tp);

	if (OidIsValid(plumbing))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("function %s is not allowed in segment rules",
						format_procedure_qualified(funcid)),
				 errdetail("It takes or returns type %s, which is for the server's own plumbing.",
						   format_type_be(plumbing)),
				 rule_errposition(ctx, location)));
	if (why != NULL)
		ereport(ERROR,
				(errcode(sqlstate),
				 errmsg("function %s is not allowed in segment rules",
						format_procedure_qualified(funcid)),
				 errdetail_internal("%s", why),
				 rule_errposition(ctx, location)));
}

/*
 * Operators are judged like functions, and their own schema counts too: the
 * stored text names the operator, and an operator in another schema can be
 * dropped and recreated over a different function after the check.
 * Returns the operator's name for the time window scan.
 */
static char *
rule_check_operator(RuleCheck *ctx, Oid opno, int location)
{
	HeapTuple	tp;
	Form_pg_operator oper;
	Oid			nspid;
	Oid			oprcode;
	char	   *name;

	tp = SearchSysCache1(OPEROID, ObjectIdGetDatum(opno));
	if (!HeapTupleIsValid(tp))
		elog(ERROR, "cache lookup failed for operator %u", opno);
	oper = (Form_pg_operator) GETSTRUCT(tp);
	nspid = oper->oprnamespace;
	oprcode = oper->oprcode;
	name = pstrdup(NameStr(oper->oprname));
	ReleaseSysCache(tp);

	if (!rule_trusted_namespace(ctx, nspid))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("operator %s is not allowed in segment rules",
						format_operator_qualified(opno)),
				 errdetail("Only operators of schemas pg_catalog and %s may be used, so that no other role can change what a rule runs.",
						   get_namespace_name(ctx->extnsp)),
				 errhint("Check search_path: a schema ahead of pg_catalog may hold an operator of the same name."),
				 rule_errposition(ctx, location)));

	rule_check_function(ctx, oprcode, location);
	return name;
}

/* Nesting limit, checked by both walkers with the same message */
static void
rule_enter(RuleCheck *ctx)
{
	if (++ctx->depth > RULE_MAX_DEPTH)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("segment rule is nested too deeply"),
				 errdetail("A rule may nest at most %d levels of expressions.",
						   RULE_MAX_DEPTH)));
}

/*
 * First look at the raw parse tree, before analysis: refuse what analysis
 * would otherwise act on (a cast runs its type's input function on a
 * literal) and what deserves a clearer message than the parser's "in check
 * constraints".  Analysis recurses on the tree too, so the depth limit is
 * enforced here first.
 */
static bool
rule_raw_walker(Node *node, RuleCheck *ctx)
{
	bool		result;

	if (node == NULL)
		return false;
	if (IsA(node, List))
		return raw_expression_tree_walker(node, rule_raw_walker, (void *) ctx);

	rule_enter(ctx);
	switch (nodeTag(node))
	{
		case T_SubLink:
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("subqueries are not allowed in segment rules"),
					 errdetail("A rule may read only the columns of its own row."),
					 rule_errposition(ctx, ((SubLink *) node)->location)));
			break;
		case T_ParamRef:
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("parameters are not allowed in segment rules"),
					 rule_errposition(ctx, ((ParamRef *) node)->location)));
			break;
		case T_FuncCall:
			{
				FuncCall   *fc = (FuncCall *) node;

				if (fc->over != NULL)
					ereport(ERROR,
							(errcode(ERRCODE_WINDOWING_ERROR),
							 errmsg("window functions are not allowed in segment rules"),
							 errdetail("A rule may read only the columns of its own row."),
							 rule_errposition(ctx, fc->location)));
				if (fc->agg_star || fc->agg_distinct || fc->agg_order != NIL ||
					fc->agg_filter != NULL || fc->agg_within_group)
					ereport(ERROR,
							(errcode(ERRCODE_GROUPING_ERROR),
							 errmsg("aggregate functions are not allowed in segment rules"),
							 errdetail("A rule may read only the columns of its own row."),
							 rule_errposition(ctx, fc->location)));
			}
			break;
		case T_ColumnRef:
			{
				ColumnRef  *cref = (ColumnRef *) node;

				/*
				 * A bare "*" parses as a target list entry, and only target
				 * list expansion copes with it: transformExpr() does not.
				 */
				if (IsA(llast(cref->fields), A_Star))
					ereport(ERROR,
							(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
							 errmsg("row expansion via \"*\" is not allowed in segment rules"),
							 errdetail("Name the columns the rule reads."),
							 rule_errposition(ctx, cref->location)));
			}
			break;
		case T_TypeCast:
			{
				TypeCast   *tc = (TypeCast *) node;
				Oid			typid = LookupTypeNameOid(NULL, tc->typeName, true);

				/* an unknown type is left to analysis to report */
				if (OidIsValid(typid))
					rule_check_type(ctx, typid, tc->location);
			}
			break;
		default:
			break;
	}
	result = raw_expression_tree_walker(node, rule_raw_walker, (void *) ctx);
	ctx->depth--;
	return result;
}

/* Cast-free core of a comparison operand; *cast tells whether one was seen */
static Node *
rule_strip_casts(Node *node, bool *cast)
{
	for (;;)
	{
		if (IsA(node, RelabelType))
			node = (Node *) ((RelabelType *) node)->arg;
		else if (IsA(node, FuncExpr) &&
				 (((FuncExpr *) node)->funcformat == COERCE_IMPLICIT_CAST ||
				  ((FuncExpr *) node)->funcformat == COERCE_EXPLICIT_CAST) &&
				 ((FuncExpr *) node)->args != NIL)
			node = (Node *) linitial(((FuncExpr *) node)->args);
		else
			return node;
		*cast = true;
	}
}

/*
 * A number constant as a double, false for anything else (NULL, NaN and
 * infinities included: a comparison with those never changes as days pass).
 */
static bool
rule_number(Oid typid, Datum value, double *result)
{
	switch (typid)
	{
		case INT2OID:
			*result = DatumGetInt16(value);
			break;
		case INT4OID:
			*result = DatumGetInt32(value);
			break;
		case INT8OID:
			*result = (double) DatumGetInt64(value);
			break;
		case FLOAT4OID:
			*result = DatumGetFloat4(value);
			break;
		case FLOAT8OID:
			*result = DatumGetFloat8(value);
			break;
		case NUMERICOID:
			/* strtod gives +-HUGE_VAL beyond double range: clipped later */
			*result = strtod(DatumGetCString(DirectFunctionCall1(numeric_out, value)),
							 NULL);
			break;
		default:
			return false;
	}
	return !isnan(*result) && !isinf(*result);
}

/*
 * A time column grows by one a day, so comparing it with c changes value
 * between floor(c) and floor(c) + 1: those are the windows, clipped to
 * 0 .. INT32_MAX.  A cast around the constant may round it up, which moves
 * the change one day later; the extra window covers that.
 */
static void
rule_add_windows(RuleCheck *ctx, double value, bool cast)
{
	double		base = floor(value);
	int			n = (cast && base != value) ? 3 : 2;

	for (int i = 0; i < n; i++)
	{
		double		day = base + i;

		if (day <= 0)
			day = 0;
		else if (day >= PG_INT32_MAX)
			day = PG_INT32_MAX;
		ctx->windows = lappend_int(ctx->windows, (int) day);
	}
}

/* Is this side a time column, seen through casts? */
static bool
rule_is_time_column(RuleCheck *ctx, Node *node)
{
	bool		cast = false;

	node = rule_strip_casts(node, &cast);
	return IsA(node, Var) &&
		bms_is_member(((Var *) node)->varattno, ctx->time_columns);
}

/* Windows of one constant side of a comparison with a time column */
static void
rule_note_constant(RuleCheck *ctx, Node *node)
{
	bool		cast = false;
	double		value;

	node = rule_strip_casts(node, &cast);
	if (IsA(node, Const))
	{
		Const	   *c = (Const *) node;

		if (!c->constisnull && rule_number(c->consttype, c->constvalue, &value))
			rule_add_windows(ctx, value, cast);
	}
}

static bool
rule_is_comparison(const char *opname)
{
	return strcmp(opname, "<") == 0 || strcmp(opname, "<=") == 0 ||
		strcmp(opname, ">") == 0 || strcmp(opname, ">=") == 0 ||
		strcmp(opname, "=") == 0 || strcmp(opname, "<>") == 0;
}

/* Does this expression read any time column? */
static bool
rule_reads_time_column(Node *node, RuleCheck *ctx)
{
	if (node == NULL)
		return false;
	if (IsA(node, Var))
		return bms_is_member(((Var *) node)->varattno, ctx->time_columns);
	return expression_tree_walker(node, rule_reads_time_column, (void *) ctx);
}

/*
 * A time column compared with an expression that does not move with time
 * (a constant, or other facts such as median_gap_days * 2): the evaluator
 * computes, per customer, the instant the column crosses it.
 */
static void
rule_note_threshold(RuleCheck *ctx, Node *time_side, Node *other)
{
	bool		cast = false;
	Var		   *var = (Var *) rule_strip_casts(time_side, &cast);

	if (rule_reads_time_column(other, ctx))
		return;
	ctx->threshold_cols = lappend_int(ctx->threshold_cols, var->varattno);
	ctx->threshold_exprs = lappend(ctx->threshold_exprs, other);
}

/* col op c, c op col, col IS [NOT] DISTINCT FROM c (BETWEEN is two of them) */
static void
rule_note_comparison(RuleCheck *ctx, const char *opname, List *args)
{
	Node	   *left;
	Node	   *right;

	if (list_length(args) != 2 || !rule_is_comparison(opname))
		return;
	left = (Node *) linitial(args);
	right = (Node *) lsecond(args);
	if (rule_is_time_column(ctx, left))
	{
		rule_note_constant(ctx, right);
		rule_note_threshold(ctx, left, right);
	}
	else if (rule_is_time_column(ctx, right))
	{
		rule_note_constant(ctx, left);
		rule_note_threshold(ctx, right, left);
	}
}

/* col op ANY/ALL (array): every element is a comparison (IN lists too) */
static void
rule_note_array_comparison(RuleCheck *ctx, const char *opname, List *args)
{
	Node	   *array;
	bool		cast = false;

	if (list_length(args) != 2 || !rule_is_comparison(opname) ||
		!rule_is_time_column(ctx, (Node *) linitial(args)))
		return;
	array = rule_strip_casts((Node *) lsecond(args), &cast);
	if (IsA(array, ArrayExpr))
	{
		ListCell   *lc;

		foreach(lc, ((ArrayExpr *) array)->elements)
		{
			rule_note_constant(ctx, (Node *) lfirst(lc));
			rule_note_threshold(ctx, (Node *) linitial(args), (Node *) lfirst(lc));
		}
	}
	else if (IsA(array, Const) && !((Const *) array)->constisnull)
	{
		ArrayType  *arr = DatumGetArrayTypeP(((Const *) array)->constvalue);
		Oid			elemtype = ARR_ELEMTYPE(arr);
		int16		typlen;
		bool		typbyval;
		char		typalign;
		Datum	   *elems;
		bool	   *nulls;
		int			n;
		double		value;

		get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
		deconstruct_array(arr, elemtype, typlen, typbyval, typalign,
						  &elems, &nulls, &n);
		for (int i = 0; i < n; i++)
			if (!nulls[i] && rule_number(elemtype, elems[i], &value))
			{
				rule_add_windows(ctx, value, cast);
				/* each element is a threshold of its own */
				rule_note_threshold(ctx, (Node *) linitial(args),
									(Node *) makeConst(elemtype, -1, InvalidOid, typlen,
													   elems[i], false, typbyval));
			}
	}
}

/* Human name of a node type a rule may not contain */
static const char *
rule_node_name(Node *node)
{
	switch (nodeTag(node))
	{
		case T_SubLink:
			return "subqueries";
		case T_Param:
			return "parameters";
		case T_Aggref:
			return "aggregate functions";
		case T_GroupingFunc:
			return "GROUPING";
		case T_WindowFunc:
			return "window functions";
		case T_RowExpr:
			return "row constructors";
		case T_RowCompareExpr:
			return "row comparisons";
		case T_FieldSelect:
		case T_FieldStore:
			return "field selections";
		case T_SubscriptingRef:
			return "subscripts";
		case T_SQLValueFunction:
			return "SQL value functions such as CURRENT_USER or CURRENT_DATE";
		case T_XmlExpr:
			return "XML expressions";
		case T_NextValueExpr:
			return "sequence functions";
		case T_CoerceToDomain:
		case T_CoerceToDomainValue:
			return "domain types";
		case T_ConvertRowtypeExpr:
			return "row type conversions";
		case T_NamedArgExpr:
			return "named function arguments";
		default:
			return NULL;
	}
}

/*
 * The check on the analysed tree: only listed node types, only our row's
 * user columns, every function, operator, type and collation through the
 * gates above.  It also collects the columns read and the time windows.
 */
static bool
rule_check_walker(Node *node, RuleCheck *ctx)
{
	bool		result;
	int			location;

	if (node == NULL)
		return false;
	if (IsA(node, List))
		return expression_tree_walker(node, rule_check_walker, (void *) ctx);

	rule_enter(ctx);
	location = exprLocation(node);

	switch (nodeTag(node))
	{
		case T_Var:
			{
				Var		   *var = (Var *) node;

				if (var->varno != 1 || var->varlevelsup != 0)
					ereport(ERROR,
							(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
							 errmsg("segment rules may only read columns of their target"),
							 rule_errposition(ctx, location)));
				if (var->varattno == InvalidAttrNumber)
					ereport(ERROR,
							(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
							 errmsg("whole-row references are not allowed in segment rules"),
							 errdetail("Name the columns the rule reads."),
							 rule_errposition(ctx, location)));
				if (var->varattno < 0)
					ereport(ERROR,
							(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
							 errmsg("system columns are not allowed in segment rules"),
							 rule_errposition(ctx, location)));
				ctx->columns = bms_add_member(ctx->columns, var->varattno);
			}
			break;
		case T_FuncExpr:
			rule_check_function(ctx, ((FuncExpr *) node)->funcid, location);
			break;
		case T_OpExpr:
		case T_DistinctExpr:
			{
				OpExpr	   *op = (OpExpr *) node;
				char	   *opname = rule_check_operator(ctx, op->opno, location);

				rule_note_comparison(ctx, opname, op->args);
			}
			break;
		case T_NullIfExpr:
			(void) rule_check_operator(ctx, ((NullIfExpr *) node)->opno, location);
			break;
		case T_ScalarArrayOpExpr:
			{
				ScalarArrayOpExpr *op = (ScalarArrayOpExpr *) node;
				char	   *opname = rule_check_operator(ctx, op->opno, location);

				rule_note_array_comparison(ctx, opname, op->args);
			}
			break;
		case T_CollateExpr:
			{
				Oid			collid = ((CollateExpr *) node)->collOid;
				HeapTuple	tp;
				Oid			nspid;

				tp = SearchSysCache1(COLLOID, ObjectIdGetDatum(collid));
				if (!HeapTupleIsValid(tp))
					elog(ERROR, "cache lookup failed for collation %u", collid);
				nspid = ((Form_pg_collation) GETSTRUCT(tp))->collnamespace;
				ReleaseSysCache(tp);
				if (!rule_trusted_namespace(ctx, nspid))
					ereport(ERROR,
							(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
							 errmsg("collation %s is not allowed in segment rules",
									quote_qualified_identifier(get_namespace_name(nspid),
															   get_collation_name(collid))),
							 errdetail("Only collations of schemas pg_catalog and %s may be used.",
									   get_namespace_name(ctx->extnsp)),
							 rule_errposition(ctx, location)));
			}
			break;
		case T_Const:
		case T_BoolExpr:
		case T_NullTest:
		case T_BooleanTest:
		case T_CaseExpr:
		case T_CaseWhen:
		case T_CaseTestExpr:
		case T_CoalesceExpr:
		case T_MinMaxExpr:
		case T_ArrayExpr:
		case T_RelabelType:
		case T_CoerceViaIO:		/* type I/O of trusted types only */
		case T_ArrayCoerceExpr: /* its element coercion is walked */
			break;
		default:
			{
				const char *what = rule_node_name(node);

				if (what != NULL)
					ereport(ERROR,
							(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
							 errmsg("%s are not allowed in segment rules", what),
							 rule_errposition(ctx, location)));
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("this kind of expression is not allowed in segment rules"),
						 errdetail("Expression node type %d is not on the list of allowed ones.",
								   (int) nodeTag(node)),
						 rule_errposition(ctx, location)));
			}
	}

	/* CaseWhen is no expression of its own and has no type */
	if (!IsA(node, CaseWhen))
		rule_check_type(ctx, exprType(node), location);

	result = expression_tree_walker(node, rule_check_walker, (void *) ctx);
	ctx->depth--;
	return result;
}

/* Which clause besides the one expression a parsed rule has, or NULL */
static const char *
rule_extra_clause(SelectStmt *select)
{
	if (select->op != SETOP_NONE)
		return "a set operation";
	if (select->withClause != NULL)
		return "a WITH clause";
	if (select->distinctClause != NIL)
		return "a DISTINCT clause";
	if (select->intoClause != NULL)
		return "an INTO clause";
	if (select->fromClause != NIL)
		return "a FROM clause";
	if (select->whereClause != NULL)
		return "a WHERE clause";
	if (select->groupClause != NIL)
		return "a GROUP BY clause";
	if (select->havingClause != NULL)
		return "a HAVING clause";
	if (select->windowClause != NIL)
		return "a WINDOW clause";
	if (select->valuesLists != NIL)
		return "a VALUES list";
	if (select->sortClause != NIL)
		return "an ORDER BY clause";
	if (select->limitOffset != NULL || select->limitCount != NULL)
		return "a LIMIT or OFFSET clause";
	if (select->lockingClause != NIL)
		return "a locking clause";
	return NULL;
}

/*
 * Parse the rule as one PL/pgSQL-style expression: the grammar itself then
 * refuses a second statement, and whatever clause it does accept around
 * the expression (FROM, WHERE, ...) is refused here.
 */
static Node *
rule_parse(const char *rule)
{
#if PG_VERSION_NUM >= 140000
	List	   *parsetree = raw_parser(rule, RAW_PARSE_PLPGSQL_EXPR);
	RawStmt    *raw;
	SelectStmt *select;
	ResTarget  *target;
	const char *extra;

	if (list_length(parsetree) != 1 ||
		!IsA(((RawStmt *) linitial(parsetree))->stmt, SelectStmt))
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("segment rule must be a single expression")));
	raw = (RawStmt *) linitial(parsetree);
	select = (SelectStmt *) raw->stmt;

	extra = rule_extra_clause(select);
	if (extra != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("segment rule must be a single expression"),
				 errdetail("The rule has %s.", extra)));
	if (select->targetList == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("segment rule is empty"),
				 errdetail("The rule has no expression, only comments or nothing.")));
	if (list_length(select->targetList) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("segment rule must be a single expression"),
				 errdetail("The rule has %d expressions.",
						   list_length(select->targetList))));
	target = (ResTarget *) linitial(select->targetList);
	if (target->name != NULL || target->indirection != NIL)
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("segment rule must be a single expression"),
				 errdetail("The rule names its result.")));
	return target->val;
#else
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("segment rules require PostgreSQL 14 or later")));
	return NULL;				/* keep compiler quiet */
#endif
}

/*
 * Analyze a parsed rule over `rel` (as alias f) with the server's own parse
 * analysis, the way a CHECK constraint is: a boolean expression, collations
 * assigned.
 */
static Node *
rule_analyze(ParseState *pstate, Relation rel, Node *expr)
{
	ParseNamespaceItem *nsitem;

	nsitem = addRangeTableEntryForRelation(pstate, rel, AccessShareLock,
										   makeAlias("f", NIL), false, true);
	addNSItemToQuery(pstate, nsitem, false, true, true);
	expr = transformExpr(pstate, expr, EXPR_KIND_CHECK_CONSTRAINT);
	expr = coerce_to_boolean(pstate, expr, "segment rule");
	assign_expr_collations(pstate, expr);
	return expr;
}

/* Attribute numbers of the time columns, each a user column of rel */
static Bitmapset *
rule_time_columns(Relation rel, ArrayType *names)
{
	Bitmapset  *result = NULL;
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	deconstruct_array(names, TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
	{
		char	   *name;
		AttrNumber	attnum;

		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("time_columns must not contain nulls")));
		name = TextDatumGetCString(elems[i]);
		attnum = get_attnum(RelationGetRelid(rel), name);
		if (attnum <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("time column \"%s\" is not a column of %s",
							name, RelationGetRelationName(rel))));
		result = bms_add_member(result, attnum);
	}
	return result;
}

static int
rule_cmp_cstring(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

static int
rule_cmp_int(const void *a, const void *b)
{
	int			x = *(const int *) a;
	int			y = *(const int *) b;

	return (x > y) - (x < y);
}

/* Referenced column names, sorted bytewise */
static ArrayType *
rule_columns_array(Relation rel, Bitmapset *columns)
{
	int			n = bms_num_members(columns);
	char	  **names = palloc(sizeof(char *) * Max(n, 1));
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));
	int			attnum = -1;
	int			i = 0;

	while ((attnum = bms_next_member(columns, attnum)) >= 0)
		names[i++] = NameStr(TupleDescAttr(RelationGetDescr(rel), attnum - 1)->attname);
	qsort(names, n, sizeof(char *), rule_cmp_cstring);
	for (i = 0; i < n; i++)
		elems[i] = CStringGetTextDatum(names[i]);
	return construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT);
}

/* Time windows, sorted and distinct */
static ArrayType *
rule_windows_array(List *windows)
{
	int			n = list_length(windows);
	int		   *days = palloc(sizeof(int) * Max(n, 1));
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));
	int			ndistinct = 0;
	int			i = 0;
	ListCell   *lc;

	foreach(lc, windows)
		days[i++] = lfirst_int(lc);
	qsort(days, n, sizeof(int), rule_cmp_int);
	for (i = 0; i < n; i++)
		if (i == 0 || days[i] != days[i - 1])
			elems[ndistinct++] = Int32GetDatum(days[i]);
	return construct_array(elems, ndistinct, INT4OID, sizeof(int32), true,
						   TYPALIGN_INT);
}

/*
 * Deparse under search_path = pg_catalog, pg_temp, the path evaluation
 * pins: everything outside pg_catalog comes out schema-qualified, and what
 * comes out unqualified resolves to the same object when the rule runs.
 *
 * Constants are printed by their output functions, so the settings those
 * read are pinned as pg_dump pins them for view definitions: ISO dates
 * read back the same under any DateStyle, postgres-style intervals under
 * any IntervalStyle, and extra_float_digits = 3 prints floats exactly.
 */
static char *
rule_deparse(Node *expr, Oid relid)
{
	static const char *const pinned[][2] = {
		{"search_path", RULE_SEARCH_PATH},
		{"DateStyle", "ISO"},
		{"IntervalStyle", "postgres"},
		{"extra_float_digits", "3"},
		{"standard_conforming_strings", "on"},
	};
	int			save_nestlevel = NewGUCNestLevel();
	char	   *result;

	for (size_t i = 0; i < lengthof(pinned); i++)
		(void) set_config_option(pinned[i][0], pinned[i][1],
								 PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	result = deparse_expression(expr, deparse_context_for("f", relid),
								true, false);
	AtEOXact_GUC(true, save_nestlevel);

	/*
	 * The deparser writes string constants for standard_conforming_strings
	 * = on and never uses E'' syntax.  Read with it off, a backslash in a
	 * constant escapes the closing quote and the rest of the constant
	 * becomes SQL, and that setting is one a database owner can change
	 * for the sessions that evaluate rules.  So a stored rule holds no
	 * backslash at all and reads the same under either setting.
	 */
	if (strchr(result, '\\') != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("backslashes are not allowed in segment rules"),
				 errdetail("A stored rule must read the same whatever standard_conforming_strings is set to."),
				 errhint("Write character classes such as [0-9] instead of escapes such as \\d.")));
	return result;
}

/*
 * rule_compile(expression, target, time_columns) -> (expression, columns,
 * time_windows)
 *
 * The one door through which an owner's rule gets into stored, generated
 * SQL: it either returns the rule in a form that is safe to paste into a
 * query over target f under search_path = pg_catalog, pg_temp, or raises
 * an error; it never runs the rule.  The columns and the time windows let
 * the evaluator read only what a rule needs and wake up when a
 * time-driven rule can change.
 */
Datum
segments_rule_compile(PG_FUNCTION_ARGS)
{
	text	   *rule_text = PG_GETARG_TEXT_PP(0);
	Oid			relid = PG_GETARG_OID(1);
	ArrayType  *time_names = PG_GETARG_ARRAYTYPE_P(2);
	int			len = VARSIZE_ANY_EXHDR(rule_text);
	char	   *rule;
	const char *p;
	TupleDesc	tupdesc;
	AclResult	aclresult;
	Relation	rel;
	ParseState *pstate;
	ErrorContextCallback errcallback;
	RuleCheck	ctx;
	Node	   *expr;
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};
	Datum	   *tcols;
	Datum	   *texprs;
	int			nthresholds;
	ListCell   *lc1;
	ListCell   *lc2;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	/* the text itself: size, encoding, something there */
	if (len > RULE_MAX_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("segment rule is too long"),
				 errdetail("The rule has %d bytes; at most %d are allowed.",
						   len, RULE_MAX_BYTES)));
	(void) pg_verifymbstr(VARDATA_ANY(rule_text), len, false);
	rule = text_to_cstring(rule_text);
	for (p = rule; *p != '\0' && scanner_isspace(*p); p++)
		;
	if (*p == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("segment rule is empty")));

	/* the target: readable by the caller, with columns */
	aclresult = pg_class_aclcheck(relid, GetUserId(), ACL_SELECT);
	if (aclresult != ACLCHECK_OK)
		aclcheck_error(aclresult, get_relkind_objtype(get_rel_relkind(relid)),
					   get_rel_name(relid));
	rel = relation_open(relid, AccessShareLock);
	switch (rel->rd_rel->relkind)
	{
		case RELKIND_RELATION:
		case RELKIND_VIEW:
		case RELKIND_MATVIEW:
		case RELKIND_FOREIGN_TABLE:
		case RELKIND_PARTITIONED_TABLE:
			break;
		default:
			ereport(ERROR,
					(errcode(ERRCODE_WRONG_OBJECT_TYPE),
					 errmsg("cannot use \"%s\" as the target of segment rules",
							RelationGetRelationName(rel)),
					 errdetail("The target must be a table, view, materialized view or foreign table.")));
	}

	memset(&ctx, 0, sizeof(ctx));
	ctx.self = fcinfo->flinfo->fn_oid;
	ctx.extnsp = get_func_namespace(ctx.self);
	ctx.time_columns = rule_time_columns(rel, time_names);

	pstate = make_parsestate(NULL);
	pstate->p_sourcetext = rule;
	ctx.pstate = pstate;

	errcallback.callback = rule_error_callback;
	errcallback.arg = (void *) rule;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;

	/* parse, vet the raw tree, analyse against f, vet the analysed tree */
	expr = rule_parse(rule);
	(void) rule_raw_walker(expr, &ctx);
	Assert(ctx.depth == 0);

	expr = rule_analyze(pstate, rel, expr);

	(void) rule_check_walker(expr, &ctx);

	error_context_stack = errcallback.previous;

	values[0] = CStringGetTextDatum(rule_deparse(expr, relid));
	values[1] = PointerGetDatum(rule_columns_array(rel, ctx.columns));
	values[2] = PointerGetDatum(rule_windows_array(ctx.windows));

	/* (time column, threshold) pairs, the threshold deparsed like the rule */
	nthresholds = list_length(ctx.threshold_cols);
	tcols = palloc(sizeof(Datum) * Max(nthresholds, 1));
	texprs = palloc(sizeof(Datum) * Max(nthresholds, 1));
	nthresholds = 0;
	forboth(lc1, ctx.threshold_cols, lc2, ctx.threshold_exprs)
	{
		AttrNumber	attnum = (AttrNumber) lfirst_int(lc1);

		tcols[nthresholds] = CStringGetTextDatum(NameStr(TupleDescAttr(RelationGetDescr(rel), attnum - 1)->attname));
		texprs[nthresholds] = CStringGetTextDatum(rule_deparse((Node *) lfirst(lc2), relid));
		nthresholds++;
	}
	values[3] = PointerGetDatum(construct_array(tcols, nthresholds, TEXTOID, -1, false, TYPALIGN_INT));
	values[4] = PointerGetDatum(construct_array(texprs, nthresholds, TEXTOID, -1, false, TYPALIGN_INT));

	free_parsestate(pstate);
	relation_close(rel, NoLock);

	tupdesc = BlessTupleDesc(tupdesc);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/*
 * Which breakpoints of a score can change a rule's result.
 *
 * A score column (revenue_percentile, rfm_recency, ...) is a whole number
 * that steps at breakpoints.  When the rule only compares it with values
 * that do not depend on the customer (revenue_percentile > 100 - 10), the
 * rule's result can only change when the score crosses one of those
 * values, so after the breakpoints are recomputed only the customers near
 * those breakpoints need another look.  Any other use of the column (an
 * argument of a function, arithmetic, a comparison with another column)
 * can change with any breakpoint.
 */
typedef struct ScoreUses
{
	Bitmapset  *score_columns;	/* attnums of the score columns */
	List	   *attnums;		/* attnum (int) of each use ... */
	List	   *thresholds;		/* ... and the value it is compared with, or
								 * NULL for any other use */
} ScoreUses;

static bool
score_is_number_type(Oid typid)
{
	return typid == INT2OID || typid == INT4OID || typid == INT8OID ||
		typid == FLOAT4OID || typid == FLOAT8OID || typid == NUMERICOID;
}

/* The score column under number casts, or NULL */
static Var *
score_column_var(ScoreUses *uses, Node *node)
{
	bool		cast = false;
	Node	   *core = rule_strip_casts(node, &cast);

	if (!score_is_number_type(exprType(node)))
		return NULL;
	if (IsA(core, Var) && ((Var *) core)->varlevelsup == 0 &&
		bms_is_member(((Var *) core)->varattno, uses->score_columns))
		return (Var *) core;
	return NULL;
}

/* Is this a comparison of a score column with a customer-independent number? */
static bool
score_note_comparison(ScoreUses *uses, Oid opno, List *args)
{
	char	   *opname;
	Node	   *other;
	Var		   *var;

	if (list_length(args) != 2)
		return false;
	opname = get_opname(opno);
	if (opname == NULL || !rule_is_comparison(opname))
		return false;
	var = score_column_var(uses, (Node *) linitial(args));
	other = (Node *) lsecond(args);
	if (var == NULL)
	{
		var = score_column_var(uses, (Node *) lsecond(args));
		other = (Node *) linitial(args);
	}
	if (var == NULL || !score_is_number_type(exprType(other)) ||
		contain_var_clause(other))
		return false;
	uses->attnums = lappend_int(uses->attnums, var->varattno);
	uses->thresholds = lappend(uses->thresholds, other);
	return true;
}

static bool
score_uses_walker(Node *node, ScoreUses *uses)
{
	if (node == NULL)
		return false;
	if (IsA(node, OpExpr) || IsA(node, DistinctExpr))
	{
		OpExpr	   *op = (OpExpr *) node;

		if (score_note_comparison(uses, op->opno, op->args))
			return false;		/* the other side reads no column */
	}
	else if (IsA(node, ScalarArrayOpExpr))
	{
		ScalarArrayOpExpr *op = (ScalarArrayOpExpr *) node;
		char	   *opname = get_opname(op->opno);
		bool		cast = false;
		Var		   *var;

		/* score IN (v1, v2, ...): each element is a comparison */
		if (list_length(op->args) == 2 && opname != NULL &&
			rule_is_comparison(opname) &&
			(var = score_column_var(uses, (Node *) linitial(op->args))) != NULL)
		{
			Node	   *array = rule_strip_casts((Node *) lsecond(op->args), &cast);

			if (!cast && IsA(array, ArrayExpr) && !contain_var_clause(array))
			{
				ListCell   *lc;
				bool		all = true;

				foreach(lc, ((ArrayExpr *) array)->elements)
					all = all && score_is_number_type(exprType((Node *) lfirst(lc)));
				if (all)
				{
					foreach(lc, ((ArrayExpr *) array)->elements)
					{
						uses->attnums = lappend_int(uses->attnums, var->varattno);
						uses->thresholds = lappend(uses->thresholds, lfirst(lc));
					}
					return false;
				}
			}
		}
	}
	else if (IsA(node, Var))
	{
		Var		   *var = (Var *) node;

		if (var->varlevelsup == 0 && bms_is_member(var->varattno, uses->score_columns))
		{
			uses->attnums = lappend_int(uses->attnums, var->varattno);
			uses->thresholds = lappend(uses->thresholds, NULL);
		}
		return false;
	}
	return expression_tree_walker(node, score_uses_walker, (void *) uses);
}

PG_FUNCTION_INFO_V1(segments_rule_score_uses);

/*
 * _rule_score_uses(expression, target, score_columns) -> (columns,
 * thresholds)
 *
 * For a rule already checked by rule_compile(): every use of a score
 * column, with the expression it is compared with (deparsed like the rule;
 * it reads no column), or NULL where the column is used any other way.
 */
Datum
segments_rule_score_uses(PG_FUNCTION_ARGS)
{
	char	   *rule = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Oid			relid = PG_GETARG_OID(1);
	ArrayType  *score_names = PG_GETARG_ARRAYTYPE_P(2);
	TupleDesc	tupdesc;
	Relation	rel;
	ParseState *pstate;
	Node	   *expr;
	ScoreUses	uses;
	Datum		values[2];
	bool		nulls[2] = {false, false};
	Datum	   *cols;
	Datum	   *exprs;
	bool	   *expr_nulls;
	int			n;
	int			dims[1];
	int			lbs[1] = {1};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	rel = relation_open(relid, AccessShareLock);
	memset(&uses, 0, sizeof(uses));
	uses.score_columns = rule_time_columns(rel, score_names);

	pstate = make_parsestate(NULL);
	pstate->p_sourcetext = rule;
	expr = rule_analyze(pstate, rel, rule_parse(rule));

	(void) score_uses_walker(expr, &uses);

	n = list_length(uses.attnums);
	cols = palloc(sizeof(Datum) * Max(n, 1));
	exprs = palloc(sizeof(Datum) * Max(n, 1));
	expr_nulls = palloc(sizeof(bool) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		AttrNumber	attnum = (AttrNumber) list_nth_int(uses.attnums, i);
		Node	   *threshold = (Node *) list_nth(uses.thresholds, i);

		cols[i] = CStringGetTextDatum(NameStr(TupleDescAttr(RelationGetDescr(rel), attnum - 1)->attname));
		expr_nulls[i] = (threshold == NULL);
		exprs[i] = threshold == NULL ? (Datum) 0 :
			CStringGetTextDatum(rule_deparse(threshold, relid));
	}
	dims[0] = n;
	values[0] = PointerGetDatum(construct_array(cols, n, TEXTOID, -1, false, TYPALIGN_INT));
	values[1] = PointerGetDatum(construct_md_array(exprs, expr_nulls, n > 0 ? 1 : 0, dims, lbs,
												   TEXTOID, -1, false, TYPALIGN_INT));

	free_parsestate(pstate);
	relation_close(rel, NoLock);

	tupdesc = BlessTupleDesc(tupdesc);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
