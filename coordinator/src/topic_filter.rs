//! Which source topics a flow mirrors: include/exclude regular expressions matched
//! against the whole topic name, internal topics never.

use regex::Regex;

/// Why a flow's include or exclude expression cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid {which} regex {regex:?}: {}", one_line(source))]
pub struct TopicFilterError {
    pub which: &'static str,
    pub regex: String,
    #[source]
    pub source: regex::Error,
}

/// The regex crate explains a syntax error over several lines (the pattern, a caret
/// line, then `error: <what>`); error messages here are one line:
/// `unclosed group at character 4`.
fn one_line(error: &regex::Error) -> String {
    let text = error.to_string();
    let lines: Vec<&str> = text.lines().collect();
    let what_opt = lines.iter().find_map(|line| line.strip_prefix("error: "));
    let caret_opt = lines.iter().find(|line| line.trim_start().starts_with('^'));
    match (what_opt, caret_opt, lines.len()) {
        (Some(what), Some(caret), 4) => {
            // The pattern line is indented by four spaces, and so is the caret line.
            let column = caret.len() - caret.trim_start().len() - 4 + 1;
            format!("{what} at character {column}")
        }
        (Some(what), _, _) => what.to_string(),
        _ => lines
            .iter()
            .map(|line| line.trim())
            .filter(|line| !line.is_empty())
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// A compiled include/exclude pair.
#[derive(Debug, Clone)]
pub struct TopicFilter {
    include: Regex,
    exclude_opt: Option<Regex>,
}

impl TopicFilter {
    /// Compiles the expressions, anchored so they must match the whole name (`orders`
    /// does not select `orders-dlq`). An empty exclude means none.
    pub fn new(include: &str, exclude_opt: Option<&str>) -> Result<Self, TopicFilterError> {
        let include = anchored("include", include)?;
        let exclude_opt = match exclude_opt {
            Some(exclude) if !exclude.is_empty() => Some(anchored("exclude", exclude)?),
            _ => None,
        };
        Ok(Self {
            include,
            exclude_opt,
        })
    }

    pub fn matches(&self, topic: &str) -> bool {
        // Kafka's own topics (`__consumer_offsets`, `__transaction_state`) and other
        // double-underscore internals are never mirrored: they describe the source
        // cluster itself.
        if topic.starts_with("__") {
            return false;
        }
        if !self.include.is_match(topic) {
            return false;
        }
        match &self.exclude_opt {
            Some(exclude) => !exclude.is_match(topic),
            None => true,
        }
    }
}

fn anchored(which: &'static str, regex: &str) -> Result<Regex, TopicFilterError> {
    let to_error = |source| TopicFilterError {
        which,
        regex: regex.to_string(),
        source,
    };
    // Compile alone first so a syntax error points into what the user wrote, not
    // into the anchoring wrapper.
    Regex::new(regex).map_err(to_error)?;
    Regex::new(&format!("^(?:{regex})$")).map_err(to_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fleets_offset_map_topic_is_never_mirrored_whatever_the_include() {
        let map_topic = kmirror_common::offset_map::map_topic("prod");
        for include in [".*", "__kmirror.*", "__kmirror\\.prod\\.offsets"] {
            let filter = TopicFilter::new(include, None).unwrap();
            assert!(!filter.matches(&map_topic), "{include}");
        }
    }

    #[test]
    fn include_must_match_the_whole_topic_name() {
        let filter = TopicFilter::new("orders", None).unwrap();
        assert!(filter.matches("orders"));
        assert!(!filter.matches("orders-dlq"));
        assert!(!filter.matches("old-orders"));

        let filter = TopicFilter::new("orders\\..*", None).unwrap();
        assert!(filter.matches("orders.eu"));
        assert!(!filter.matches("orders"));
    }

    #[test]
    fn alternation_is_anchored_as_a_whole() {
        let filter = TopicFilter::new("a|b", None).unwrap();
        assert!(filter.matches("a"));
        assert!(filter.matches("b"));
        assert!(!filter.matches("ab"));
        assert!(!filter.matches("xb"));
    }

    #[test]
    fn exclude_removes_whole_name_matches_only() {
        let filter = TopicFilter::new(".*", Some(".*-dlq")).unwrap();
        assert!(filter.matches("orders"));
        assert!(!filter.matches("orders-dlq"));
        assert!(filter.matches("orders-dlq-archive"));
    }

    #[test]
    fn empty_exclude_excludes_nothing() {
        let filter = TopicFilter::new(".*", Some("")).unwrap();
        assert!(filter.matches("orders"));
    }

    #[test]
    fn internal_topics_are_never_selected() {
        let filter = TopicFilter::new(".*", None).unwrap();
        assert!(!filter.matches("__consumer_offsets"));
        assert!(!filter.matches("__transaction_state"));
        assert!(filter.matches("_private"));
    }

    #[test]
    fn invalid_expressions_name_which_one_failed() {
        let error = TopicFilter::new("orders(", None).unwrap_err();
        assert_eq!(error.which, "include");
        assert!(error
            .to_string()
            .starts_with("invalid include regex \"orders(\""));

        let error = TopicFilter::new(".*", Some("[z-a]")).unwrap_err();
        assert_eq!(error.which, "exclude");
        assert!(error.to_string().contains("invalid exclude regex"));
    }

    #[test]
    fn a_regex_that_closes_the_wrapper_group_is_rejected() {
        // `a)|(b` would compile inside `^(?:...)$` and change its meaning.
        assert!(TopicFilter::new("a)|(?:b", None).is_err());
    }
}
