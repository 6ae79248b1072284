//! Properties of the normalizer over generated statements: changing only the
//! values in a statement (literals of every form and bind parameters of every
//! style) never changes its fingerprint, normalizing is idempotent, and no
//! input makes it panic.

use proptest::prelude::*;
use querypulse_agent::fingerprint::{Dialect, normalize, normalize_text};

const DIALECTS: [Dialect; 4] = [Dialect::Generic, Dialect::Postgres, Dialect::Mysql, Dialect::Sqlite];

/// Statements with `{}` where a value goes, valid in every dialect.
const SHARED_TEMPLATES: &[&str] = &[
    "SELECT * FROM users WHERE id = {}",
    "select a, b from t where a > {} and b < {} order by a limit {}",
    "select a from t where a={} and b<>{} or c>={}",
    "SELECT * FROM orders WHERE status IN ({}, {}, {}) AND total >= {}",
    "insert into t (a, b, c) values ({}, {}, {}), ({}, {}, {})",
    "UPDATE accounts SET balance = balance - {}, note = {} WHERE id = {};",
    "select case when x > {} then {} else {} end from t",
    "select case {} when {} then {} end",
    "delete from sessions where expires_at < {} and user_id = {}",
    "select count(*) from t where a between {} and {}",
    "select {} + {} * {}, {} - {}",
    "select {} as v, coalesce(a, {}) from t where b <> {}",
    "select * from t where a = {} or (b = {} and c != {})",
    "select * from t where name like {} escape {}",
    "select * from t limit {} offset {}",
    "select a from t group by a having count(*) > {}",
    "select * from t where (a, b) in (({}, {}), ({}, {}))",
    "select * from t where a = {} -- trailing comment\n and b = {}",
    "select /* a comment */ * from t where a = {} and lower(b) = lower({})",
    "with x as (select {} as v) select * from x where v is not null and v <> {}",
];

fn templates(dialect: Dialect) -> Vec<&'static str> {
    let own: &[&str] = match dialect {
        Dialect::Generic => &["select * from t where a = {} /* outer /* nested */ still */ and b = {}"],
        Dialect::Postgres => &[
            "select {}::int, {}::text[]",
            "select * from t where data @> {} and tags ?| array[{}, {}] and data ? {}",
            "select data ->> {} from t where data #>> {} = {}",
            "select * from t where id = any({}) and ts > now() - interval {}",
            "select * from t where a = {} /* outer /* nested */ still */ and b = {}",
            "select array[{}, {}, {}] || {}",
        ],
        Dialect::Mysql => &[
            "insert into t (a, b) values ({}, {}) on duplicate key update b = {}",
            "select date_add(d, interval {} day) from t where a = {} # trailing comment",
            "select * from t where j->>'$.k' = {} and a <=> {}",
            "select * from t limit {}, {}",
            "set @v = {}",
            "select /*+ MAX_EXECUTION_TIME(1000) */ a from t where a = {}",
        ],
        Dialect::Sqlite => &[
            "select * from [order] where a = {} and b glob {} limit {}",
            "insert or replace into t (a, b) values ({}, {})",
            "select * from t where a = {} and b in ({})",
        ],
    };
    SHARED_TEMPLATES.iter().chain(own).copied().collect()
}

fn fill(template: &str, values: &[String]) -> String {
    let mut out = String::with_capacity(template.len() + 16 * values.len());
    for (i, part) in template.split("{}").enumerate() {
        if i > 0 {
            out.push_str(&values[(i - 1) % values.len()]);
        }
        out.push_str(part);
    }
    out
}

fn number() -> impl Strategy<Value = String> {
    let finite = any::<f64>().prop_filter("finite", |f| f.is_finite());
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        finite.clone().prop_map(|f| format!("{f:?}")),
        finite.prop_map(|f| format!("{f:E}")),
        (0u32..1000, 0u32..1000).prop_map(|(a, b)| format!("{a}.{b}")),
        (0u32..1000, any::<bool>()).prop_map(|(b, neg)| format!("{}.{b}", if neg { "-" } else { "" })),
        any::<u32>().prop_map(|n| format!("0x{n:X}")),
        Just("TRUE".to_owned()),
        Just("false".to_owned()),
        Just("NULL".to_owned()),
    ]
}

/// A string literal with arbitrary contents, written the ways `dialect` allows.
fn string_literal(dialect: Dialect) -> BoxedStrategy<String> {
    let doubled = |s: &str, q: char| format!("{q}{}{q}", s.replace(q, &format!("{q}{q}")));
    let backslashed = |s: &str, q: char| format!("{q}{}{q}", s.replace('\\', "\\\\").replace(q, &format!("\\{q}")));
    (any::<String>(), 0..3u8)
        .prop_map(move |(s, form)| match (dialect, form) {
            (Dialect::Postgres, 1) => format!("E{}", backslashed(&s, '\'')),
            (Dialect::Postgres, 2) if !s.contains('$') => format!("$v${s}$v$"),
            (Dialect::Postgres | Dialect::Sqlite, _) => doubled(&s, '\''),
            (Dialect::Mysql, 1) => backslashed(&s, '"'),
            (Dialect::Mysql, 2) => backslashed(&s, '\''),
            (Dialect::Mysql | Dialect::Generic, _) => doubled(&s.replace('\\', "\\\\"), '\''),
        })
        .boxed()
}

fn parameter(dialect: Dialect) -> BoxedStrategy<String> {
    let positional = (1u16..100).prop_map(|n| format!("${n}"));
    let named = "[a-z_][a-z0-9_]{0,8}";
    match dialect {
        Dialect::Postgres => positional.boxed(),
        Dialect::Mysql => Just("?".to_owned()).boxed(),
        Dialect::Sqlite => prop_oneof![
            Just("?".to_owned()),
            (1u16..100).prop_map(|n| format!("?{n}")),
            named.prop_map(|n| format!(":{n}")),
            named.prop_map(|n| format!("@{n}")),
            named.prop_map(|n| format!("${n}")),
        ]
        .boxed(),
        Dialect::Generic => prop_oneof![
            positional,
            Just("?".to_owned()),
            named.prop_map(|n| format!(":{n}")),
            named.prop_map(|n| format!("@{n}")),
        ]
        .boxed(),
    }
}

/// A value as `dialect` writes it: a literal of any form or a bind parameter.
fn value(dialect: Dialect) -> BoxedStrategy<String> {
    prop_oneof![3 => number(), 3 => string_literal(dialect), 1 => parameter(dialect)].boxed()
}

/// A dialect, one of its templates and two independent sets of values for it.
fn template_with_two_fillings() -> impl Strategy<Value = (Dialect, &'static str, Vec<String>, Vec<String>)> {
    prop::sample::select(DIALECTS.to_vec()).prop_flat_map(|dialect| {
        (
            Just(dialect),
            prop::sample::select(templates(dialect)),
            prop::collection::vec(value(dialect), 12),
            prop::collection::vec(value(dialect), 12),
        )
    })
}

/// Fragments of SQL, well-formed or not, to glue into statements nobody wrote.
const FRAGMENTS: &[&str] = &[
    "SELECT",
    "from",
    "WHERE",
    "in",
    "values",
    "is",
    "not",
    "null",
    "true",
    "limit",
    "interval",
    "and",
    "array",
    "t1",
    "Users",
    "\"Q\"",
    "`b`",
    "[c]",
    "'x'",
    "'a''b'",
    "'a\\'b'",
    "E'x\\''",
    "$$x$$",
    "$t$x$t$",
    "1",
    "-1",
    "+2",
    "1.5e3",
    "0x1f",
    ".5",
    "$1",
    "?",
    "?1",
    ":n",
    "@n",
    "@@n",
    "$n",
    "=",
    "<>",
    "->>",
    "#>",
    "?|",
    "@>",
    "@?",
    "::",
    "||",
    "-",
    "+",
    "*",
    "/",
    "~",
    "!",
    "(",
    ")",
    "[",
    "]",
    ",",
    ";",
    ".",
    "{",
    "}",
    "-- x\n",
    "/* x */",
    "# x\n",
    "/*! x */",
    "/*",
    "*/",
    "'",
    "\"",
    "$",
    "\\",
    "é",
    "\u{0}",
    "\n",
    "--",
    "#",
    "IN (1, 2)",
    "VALUES (1), (2)",
    "(1, 'a')",
    "), (",
    "ARRAY[1, 2]",
    "is not",
    "NOT",
    "NULL",
    "TRUE",
];

fn soup() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (
            prop::sample::select(FRAGMENTS),
            prop::sample::select(&[" ", "", "\n"][..]),
        ),
        0..40,
    )
    .prop_map(|parts| parts.into_iter().flat_map(|(f, sep)| [f, sep]).collect())
}

proptest! {
    #[test]
    fn changing_only_values_never_changes_the_fingerprint(
        (dialect, template, a, b) in template_with_two_fillings()
    ) {
        let (sql_a, sql_b) = (fill(template, &a), fill(template, &b));
        let (norm_a, norm_b) = (normalize(&sql_a, dialect), normalize(&sql_b, dialect));
        prop_assert_eq!(
            &norm_a, &norm_b,
            "{:?}: {:?} and {:?} differ only in values", dialect, sql_a, sql_b
        );
        prop_assert!(!norm_a.text.contains(|c: char| c.is_ascii_digit()), "a number survived: {:?}", norm_a.text);
    }

    #[test]
    fn in_lists_and_values_rows_of_any_length_share_a_fingerprint(
        (dialect, list, rows) in prop::sample::select(DIALECTS.to_vec()).prop_flat_map(|d| (
            Just(d),
            prop::collection::vec(value(d), 1..20),
            prop::collection::vec((value(d), value(d)), 1..10),
        ))
    ) {
        let list = list.join(", ");
        prop_assert_eq!(
            normalize_text(&format!("select * from t where id in ({list}) and x = 1"), dialect),
            "select * from t where id in (?) and x = ?"
        );
        let rows: Vec<String> = rows.iter().map(|(a, b)| format!("({a}, {b})")).collect();
        prop_assert_eq!(
            normalize_text(&format!("INSERT INTO t (a, b) VALUES {}", rows.join(",")), dialect),
            "insert into t(a, b) values (?, ?)"
        );
    }

    #[test]
    fn normalizing_generated_statements_is_idempotent((dialect, template, values, _) in template_with_two_fillings()) {
        let once = normalize_text(&fill(template, &values), dialect);
        prop_assert_eq!(normalize_text(&once, dialect), once);
    }

    #[test]
    fn normalizing_sql_soup_or_any_text_is_idempotent(
        sql in prop_oneof![soup(), "[ -~\n\t\u{0}é\u{a0}]{0,120}"],
        dialect in prop::sample::select(DIALECTS.to_vec()),
    ) {
        let once = normalize_text(&sql, dialect);
        prop_assert_eq!(normalize_text(&once, dialect), once, "input {:?}", sql);
    }

    #[test]
    fn arbitrary_text_never_panics_and_is_deterministic(
        text in prop_oneof![any::<String>(), prop::collection::vec(any::<u8>(), 0..300)
            .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned())],
        dialect in prop::sample::select(DIALECTS.to_vec()),
    ) {
        let once = normalize(&text, dialect);
        prop_assert_eq!(normalize(&text, dialect), once);
    }
}
