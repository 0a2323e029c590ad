//! Invalidation rules: which TanStack Query keys an event on a topic makes stale.
//!
//! A rule is a topic pattern and a list of query-key templates. A pattern is a topic name
//! with at most one `{id}` placeholder (`list:{id}`), which matches one or more characters;
//! every `{id}` inside a template's segments is replaced by what it matched. Ids stay strings,
//! exactly as they appear in the topic. The first rule that matches a topic wins; custom rules
//! come before the [defaults](Rules::defaults), so they can override them.
//!
//! The same rules serve both moments a query goes stale: an event on the topic, and a
//! reconnect (events may have been missed while the socket was down).

/// The placeholder a pattern and its templates share.
pub const ID: &str = "{id}";

/// One query key: a list of string segments, e.g. `["lists", "123"]`.
pub type QueryKey = Vec<String>;

/// Why a rule could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    /// The pattern is empty.
    #[error("an invalidation rule's topic pattern is empty")]
    EmptyPattern,
    /// The pattern has more than one `{id}`.
    #[error("topic pattern \"{0}\" has more than one {{id}}")]
    TooManyPlaceholders(String),
}

/// A topic pattern and the query keys it invalidates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    prefix: String,
    /// `Some(suffix)` when the pattern has a placeholder, `None` for an exact name.
    suffix: Option<String>,
    keys: Vec<QueryKey>,
}

impl Rule {
    /// A rule from a pattern (`"list:{id}"`, `"gifts:all"`) and key templates.
    ///
    /// # Errors
    /// [`RuleError`] for an empty pattern or one with several placeholders.
    pub fn new(pattern: &str, keys: Vec<QueryKey>) -> Result<Self, RuleError> {
        if pattern.is_empty() {
            return Err(RuleError::EmptyPattern);
        }
        let (prefix, suffix) = match split_id(pattern) {
            None => (pattern, None),
            Some((_, suffix)) if split_id(suffix).is_some() => {
                return Err(RuleError::TooManyPlaceholders(pattern.to_owned()));
            }
            Some((prefix, suffix)) => (prefix, Some(suffix.to_owned())),
        };
        Ok(Self {
            prefix: prefix.to_owned(),
            suffix,
            keys,
        })
    }

    /// The id `topic` binds, `Some("")` for an exact match, `None` if it does not match.
    fn matches<'t>(&self, topic: &'t str) -> Option<&'t str> {
        match &self.suffix {
            None => (topic == self.prefix).then_some(""),
            Some(suffix) => {
                let rest = topic.strip_prefix(self.prefix.as_str())?;
                let id = rest.strip_suffix(suffix.as_str())?;
                (!id.is_empty()).then_some(id)
            }
        }
    }

    fn expand(&self, id: &str) -> Vec<QueryKey> {
        self.keys
            .iter()
            .map(|key| key.iter().map(|seg| replace_id(seg, id)).collect())
            .collect()
    }
}

/// `text` before and after its first `{id}`. A byte search rather than `str::split_once`:
/// the generic substring searcher would add about 1.5 KB to the wasm for this one use.
fn split_id(text: &str) -> Option<(&str, &str)> {
    let at = text
        .as_bytes()
        .windows(ID.len())
        .position(|w| w == ID.as_bytes())?;
    // `{` is ASCII: both ends are char boundaries.
    Some((text.get(..at)?, text.get(at + ID.len()..)?))
}

/// `text` with every `{id}` replaced by `id`.
fn replace_id(mut text: &str, id: &str) -> String {
    let mut out = String::with_capacity(text.len());
    while let Some((before, after)) = split_id(text) {
        out.push_str(before);
        out.push_str(id);
        text = after;
    }
    out.push_str(text);
    out
}

/// An ordered list of rules.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rules {
    rules: Vec<Rule>,
}

impl Rules {
    /// No rules: nothing is invalidated.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The seed's topic families: `list:{id}` → `["lists", id]`, `occasion:{id}` →
    /// `["occasions", id]`, `list-items:all` → `["list-items"]`, `gifts:all` → `["gifts"]`.
    pub fn defaults() -> Self {
        let rule = |pattern: &str, key: &[&str]| Rule {
            keys: vec![key.iter().map(|s| (*s).to_owned()).collect()],
            ..Rule::new(pattern, Vec::new()).unwrap_or_else(|_| unreachable!("valid pattern"))
        };
        Self {
            rules: vec![
                rule("list:{id}", &["lists", ID]),
                rule("occasion:{id}", &["occasions", ID]),
                rule("list-items:all", &["list-items"]),
                rule("gifts:all", &["gifts"]),
            ],
        }
    }

    /// Adds a rule after the existing ones.
    pub fn push(&mut self, rule: Rule) {
        self.rules.push(rule);
    }

    /// Appends `other`'s rules after these (custom rules, then the defaults).
    pub fn then(mut self, other: Rules) -> Self {
        self.rules.extend(other.rules);
        self
    }

    /// The query keys an event on `topic` invalidates (the first matching rule's).
    pub fn keys_for(&self, topic: &str) -> Vec<QueryKey> {
        self.rules
            .iter()
            .find_map(|r| r.matches(topic).map(|id| r.expand(id)))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(rules: &Rules, topic: &str) -> Vec<Vec<String>> {
        rules.keys_for(topic)
    }

    fn k(segs: &[&str]) -> QueryKey {
        segs.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn default_rules() {
        let r = Rules::defaults();
        assert_eq!(keys(&r, "list:123"), [k(&["lists", "123"])]);
        assert_eq!(keys(&r, "occasion:abc-9"), [k(&["occasions", "abc-9"])]);
        assert_eq!(keys(&r, "list-items:all"), [k(&["list-items"])]);
        assert_eq!(keys(&r, "gifts:all"), [k(&["gifts"])]);
        // Ids stay strings; "007" is not turned into 7.
        assert_eq!(keys(&r, "list:007"), [k(&["lists", "007"])]);
    }

    #[test]
    fn non_matching_topics_invalidate_nothing() {
        let r = Rules::defaults();
        for t in ["list:", "lists:1", "gifts:some", "chat", "List:1"] {
            assert!(keys(&r, t).is_empty(), "{t}");
        }
    }

    #[test]
    fn custom_rules_come_first_and_can_have_many_keys() {
        let mut custom = Rules::empty();
        custom.push(
            Rule::new(
                "list:{id}",
                vec![
                    k(&["lists", "{id}"]),
                    k(&["list-summary"]),
                    k(&["x-{id}-y"]),
                ],
            )
            .unwrap(),
        );
        custom.push(Rule::new("user:{id}/inbox", vec![k(&["inbox", "{id}"])]).unwrap());
        custom.push(Rule::new("é:{id}", vec![k(&["{id}é{id}", "{i}d{", "{id"])]).unwrap());
        let r = custom.then(Rules::defaults());
        assert_eq!(
            keys(&r, "list:5"),
            [k(&["lists", "5"]), k(&["list-summary"]), k(&["x-5-y"])]
        );
        assert_eq!(keys(&r, "user:42/inbox"), [k(&["inbox", "42"])]);
        assert!(keys(&r, "user:/inbox").is_empty(), "an id is never empty");
        // Every placeholder of a segment is replaced; near-misses are kept as they are.
        assert_eq!(keys(&r, "é:7"), [k(&["7é7", "{i}d{", "{id"])]);
        assert_eq!(
            keys(&r, "gifts:all"),
            [k(&["gifts"])],
            "defaults still apply"
        );
    }

    #[test]
    fn bad_patterns() {
        assert_eq!(Rule::new("", vec![]), Err(RuleError::EmptyPattern));
        let err = Rule::new("{id}:{id}", vec![]).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"topic pattern "{id}:{id}" has more than one {id}"#
        );
    }
}
