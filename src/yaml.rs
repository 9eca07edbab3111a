//! A YAML tree that remembers where every node came from, and a serde deserializer over it.
//!
//! serde stops at the first error, but an operator wants every mistake in an inventory at
//! once, each with its line and column. So the file is first read into a [`Node`] tree
//! with positions; the typed model is then deserialized from that tree, and when serde
//! rejects a node (an unknown key, a wrong type, an unknown variant) the problem is
//! recorded, the node is pruned and deserialization is retried. The tree also lets the
//! semantic validation point at the exact place of a problem.

use std::collections::HashMap;
use std::fmt;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A position in the source: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Loc {
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

impl From<Marker> for Loc {
    fn from(m: Marker) -> Self {
        // yaml-rust2 counts lines from 1 and columns from 0.
        Loc {
            line: m.line(),
            col: m.col() + 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// A scalar; `plain` is false for quoted and block scalars, which are always strings.
    Scalar {
        value: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: NodeKind,
    pub loc: Loc,
}

impl Node {
    fn is_null(&self) -> bool {
        matches!(&self.kind, NodeKind::Scalar { value, plain: true } if is_null_scalar(value))
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    /// The child under a mapping key or a sequence index.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            NodeKind::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            NodeKind::Seq(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
            NodeKind::Scalar { .. } => None,
        }
    }

    /// The position of the node at `path`, or of the deepest ancestor that exists.
    pub fn locate(&self, path: &[&str]) -> Loc {
        let mut node = self;
        for part in path {
            match node.get(part) {
                Some(child) => node = child,
                None => break,
            }
        }
        node.loc
    }

    /// The position of the key `key` of the mapping at `path` (falls back to the mapping).
    pub fn locate_key(&self, path: &[&str], key: &str) -> Loc {
        let mut node = self;
        for part in path {
            match node.get(part) {
                Some(child) => node = child,
                None => return node.loc,
            }
        }
        if let NodeKind::Map(entries) = &node.kind
            && let Some((k, _)) = entries.iter().find(|(k, _)| k.as_str() == Some(key))
        {
            return k.loc;
        }
        node.loc
    }

    fn get_path(&self, path: &[PathPart]) -> Option<&Node> {
        let mut node = self;
        for part in path {
            node = match (&node.kind, part) {
                (NodeKind::Map(entries), PathPart::Key(key)) => entries
                    .iter()
                    .find(|(k, _)| k.as_str() == Some(key))
                    .map(|(_, v)| v)?,
                (NodeKind::Seq(items), PathPart::Index(i)) => items.get(*i)?,
                _ => return None,
            };
        }
        Some(node)
    }

    fn get_path_mut(&mut self, path: &[PathPart]) -> Option<&mut Node> {
        let mut node = self;
        for part in path {
            node = match (&mut node.kind, part) {
                (NodeKind::Map(entries), PathPart::Key(key)) => entries
                    .iter_mut()
                    .find(|(k, _)| k.as_str() == Some(key))
                    .map(|(_, v)| v)?,
                (NodeKind::Seq(items), PathPart::Index(i)) => items.get_mut(*i)?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// Adds `key: null` to the mapping at `path`; returns whether it could.
    fn insert_null(&mut self, path: &[PathPart], key: &str) -> bool {
        let Some(node) = self.get_path_mut(path) else {
            return false;
        };
        let loc = node.loc;
        let NodeKind::Map(entries) = &mut node.kind else {
            return false;
        };
        let scalar = |value: &str| Node {
            kind: NodeKind::Scalar {
                value: value.to_string(),
                plain: true,
            },
            loc,
        };
        entries.push((scalar(key), scalar("")));
        true
    }

    /// Removes the node at `path` from its parent; returns whether something was removed.
    fn prune(&mut self, path: &[PathPart]) -> bool {
        let Some((last, parents)) = path.split_last() else {
            return false;
        };
        let mut node = self;
        for part in parents {
            let next = match (&mut node.kind, part) {
                (NodeKind::Map(entries), PathPart::Key(key)) => entries
                    .iter_mut()
                    .find(|(k, _)| k.as_str() == Some(key))
                    .map(|(_, v)| v),
                (NodeKind::Seq(items), PathPart::Index(i)) => items.get_mut(*i),
                _ => None,
            };
            match next {
                Some(child) => node = child,
                None => return false,
            }
        }
        match (&mut node.kind, last) {
            (NodeKind::Map(entries), PathPart::Key(key)) => {
                let before = entries.len();
                entries.retain(|(k, _)| k.as_str() != Some(key));
                entries.len() != before
            }
            (NodeKind::Seq(items), PathPart::Index(i)) if *i < items.len() => {
                items.remove(*i);
                true
            }
            _ => false,
        }
    }
}

fn is_null_scalar(value: &str) -> bool {
    matches!(value, "" | "~" | "null" | "Null" | "NULL")
}

/// A YAML syntax problem (the file is not YAML, or not the shape of one document).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub loc: Loc,
    pub message: String,
}

/// How deep collections may nest: an inventory needs 6 levels; deeper input is hostile
/// or broken, and refusing it keeps every walk over the tree shallow.
pub const MAX_DEPTH: usize = 64;
/// How many values a document may hold once aliases are expanded (an alias copies its
/// anchor's whole subtree): a 1000-host inventory has about 20 000.
pub const MAX_NODES: usize = 200_000;

/// Reads one YAML document into a [`Node`] tree.
///
/// The parser is driven event by event (its own recursive loader overflows the stack on
/// deeply nested input), and the tree is bounded by [`MAX_DEPTH`] and [`MAX_NODES`].
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut builder = TreeBuilder::default();
    let mut parser = Parser::new_from_str(text);
    loop {
        let (event, mark) = parser.next_token().map_err(|e| SyntaxError {
            loc: Loc::from(*e.marker()),
            message: e.info().to_string(),
        })?;
        if event == Event::StreamEnd {
            break;
        }
        builder.on_event(event, mark);
        if builder.error.is_some() {
            break;
        }
    }
    if let Some(err) = builder.error {
        return Err(err);
    }
    let mut docs = builder.documents;
    match docs.len() {
        0 => Err(SyntaxError {
            loc: Loc { line: 1, col: 1 },
            message: "the file is empty: an inventory needs `cluster`, `ssh` and `hosts`"
                .to_string(),
        }),
        1 => Ok(docs.remove(0)),
        _ => Err(SyntaxError {
            loc: docs[1].loc,
            message: "more than one YAML document (`---`): an inventory is one document"
                .to_string(),
        }),
    }
}

#[derive(Default)]
struct TreeBuilder {
    /// Open collections: the node being filled and, for maps, a pending key.
    stack: Vec<(Node, Option<Node>)>,
    anchors: HashMap<usize, Node>,
    /// Anchor ids of the open collections, to record them when they close.
    anchor_ids: Vec<usize>,
    documents: Vec<Node>,
    error: Option<SyntaxError>,
    /// Values so far, aliases counted at their expanded size.
    nodes: usize,
}

/// How many levels of collections `node` spans (a scalar: 0).
fn depth(node: &Node) -> usize {
    match &node.kind {
        NodeKind::Scalar { .. } => 0,
        NodeKind::Seq(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        NodeKind::Map(entries) => {
            1 + entries
                .iter()
                .map(|(k, v)| depth(k).max(depth(v)))
                .max()
                .unwrap_or(0)
        }
    }
}

/// How many values `node` holds (itself included).
fn size(node: &Node) -> usize {
    match &node.kind {
        NodeKind::Scalar { .. } => 1,
        NodeKind::Seq(items) => 1 + items.iter().map(size).sum::<usize>(),
        NodeKind::Map(entries) => {
            1 + entries
                .iter()
                .map(|(k, v)| size(k) + size(v))
                .sum::<usize>()
        }
    }
}

impl TreeBuilder {
    /// Counts `n` more values; false (and an error) past [`MAX_NODES`].
    fn count(&mut self, n: usize, loc: Loc) -> bool {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES && self.error.is_none() {
            self.error = Some(SyntaxError {
                loc,
                message: format!(
                    "the document holds more than {MAX_NODES} values once its aliases (`*name`) are expanded: an inventory is far smaller, so this looks like an alias bomb"
                ),
            });
        }
        self.error.is_none()
    }

    /// Opens a collection (an error past [`MAX_DEPTH`]).
    fn open(&mut self, kind: NodeKind, anchor: usize, loc: Loc) {
        if self.stack.len() >= MAX_DEPTH {
            self.error = Some(SyntaxError {
                loc,
                message: format!(
                    "collections nest more than {MAX_DEPTH} levels deep here: an inventory needs about 6"
                ),
            });
            return;
        }
        if !self.count(1, loc) {
            return;
        }
        self.anchor_ids.push(anchor);
        self.stack.push((Node { kind, loc }, None));
    }

    fn push_value(&mut self, node: Node) {
        if self.error.is_some() {
            return;
        }
        let Some((parent, pending_key)) = self.stack.last_mut() else {
            self.documents.push(node);
            return;
        };
        match &mut parent.kind {
            NodeKind::Seq(items) => items.push(node),
            NodeKind::Map(entries) => match pending_key.take() {
                None => *pending_key = Some(node),
                Some(key) => {
                    if let Some(name) = key.as_str()
                        && let Some((first, _)) =
                            entries.iter().find(|(k, _)| k.as_str() == Some(name))
                    {
                        self.error = Some(SyntaxError {
                            loc: key.loc,
                            message: format!(
                                "duplicate key `{name}` (first at line {}): each key may appear once",
                                first.loc.line
                            ),
                        });
                        return;
                    }
                    entries.push((key, node));
                }
            },
            NodeKind::Scalar { .. } => {}
        }
    }
}

impl MarkedEventReceiver for TreeBuilder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let loc = Loc::from(mark);
        match event {
            Event::Scalar(value, style, anchor, _tag) => {
                if !self.count(1, loc) {
                    return;
                }
                let node = Node {
                    kind: NodeKind::Scalar {
                        value,
                        plain: style == TScalarStyle::Plain,
                    },
                    loc,
                };
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.push_value(node);
            }
            Event::SequenceStart(anchor, _) => self.open(NodeKind::Seq(Vec::new()), anchor, loc),
            Event::MappingStart(anchor, _) => self.open(NodeKind::Map(Vec::new()), anchor, loc),
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((node, _)) = self.stack.pop() {
                    let anchor = self.anchor_ids.pop().unwrap_or(0);
                    if anchor > 0 {
                        self.anchors.insert(anchor, node.clone());
                    }
                    self.push_value(node);
                }
            }
            Event::Alias(id) => {
                let node = self.anchors.get(&id).cloned().map_or_else(
                    || Node {
                        kind: NodeKind::Scalar {
                            value: String::new(),
                            plain: true,
                        },
                        loc,
                    },
                    |mut n| {
                        n.loc = loc;
                        n
                    },
                );
                // Count before the copy grows the tree: a bomb stops at the first alias
                // that would pass the limit. Nesting through aliases is bounded too.
                if self.stack.len() + depth(&node) > MAX_DEPTH {
                    self.error = Some(SyntaxError {
                        loc,
                        message: format!(
                            "this alias nests collections more than {MAX_DEPTH} levels deep: an inventory needs about 6"
                        ),
                    });
                    return;
                }
                if !self.count(size(&node), loc) {
                    return;
                }
                self.push_value(node);
            }
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

/// One step of a path into the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPart {
    Key(String),
    Index(usize),
}

/// Renders a path the way a user would write it: `hosts[2].ssh.port`.
pub fn display_path(path: &[PathPart]) -> String {
    let mut out = String::new();
    for part in path {
        match part {
            PathPart::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            PathPart::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// What went wrong while deserializing a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeErrorKind {
    UnknownField {
        field: String,
        expected: &'static [&'static str],
    },
    UnknownVariant {
        variant: String,
        expected: &'static [&'static str],
    },
    MissingField(&'static str),
    InvalidType {
        expected: String,
        found: String,
    },
    Other(String),
}

/// A deserialization error; the deserializer attaches the path and position of the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeError {
    pub kind: DeErrorKind,
    pub path: Option<Vec<PathPart>>,
    pub loc: Option<Loc>,
}

impl DeError {
    fn at(mut self, path: &[PathPart], loc: Loc) -> Self {
        if self.path.is_none() {
            self.path = Some(path.to_vec());
            self.loc = Some(loc);
        }
        self
    }

    /// The message a user reads, with a suggestion where one is close.
    pub fn message(&self) -> (String, Option<String>) {
        let path = self.path.as_deref().map(display_path).unwrap_or_default();
        match &self.kind {
            DeErrorKind::UnknownField { field, expected } => {
                let parent = self
                    .path
                    .as_deref()
                    .and_then(|p| p.split_last().map(|(_, parents)| display_path(parents)))
                    .filter(|p| !p.is_empty())
                    .map_or_else(|| "the top level".to_string(), |p| format!("`{p}`"));
                (
                    format!("unknown key `{field}` in {parent}"),
                    Some(suggest(field, expected, "keys")),
                )
            }
            DeErrorKind::UnknownVariant { variant, expected } => (
                format!("`{variant}` is not a valid value for `{path}`"),
                Some(suggest(variant, expected, "values")),
            ),
            DeErrorKind::MissingField(field) => {
                let at = if path.is_empty() {
                    "the top level".to_string()
                } else {
                    format!("`{path}`")
                };
                (
                    format!("missing key `{field}` in {at}"),
                    Some(format!("add `{field}:` there")),
                )
            }
            DeErrorKind::InvalidType { expected, found } => (
                format!("`{path}` is {found}"),
                Some(format!("expected {expected}")),
            ),
            DeErrorKind::Other(msg) => {
                let help = Some("compare with inventory/sample/cluster.yaml".to_string());
                if path.is_empty() {
                    (msg.clone(), help)
                } else {
                    (format!("`{path}`: {msg}"), help)
                }
            }
        }
    }
}

fn suggest(given: &str, expected: &[&str], what: &str) -> String {
    let close = expected
        .iter()
        .map(|e| (strsim::jaro_winkler(given, e), e))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let valid = if expected.is_empty() {
        "none".to_string()
    } else {
        expected.join(", ")
    };
    match close {
        Some((_, best)) => format!("did you mean `{best}`? valid {what}: {valid}"),
        None => format!("valid {what}: {valid}"),
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message().0)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            kind: DeErrorKind::Other(msg.to_string()),
            path: None,
            loc: None,
        }
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DeError {
            kind: DeErrorKind::UnknownField {
                field: field.to_string(),
                expected,
            },
            path: None,
            loc: None,
        }
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        DeError {
            kind: DeErrorKind::UnknownVariant {
                variant: variant.to_string(),
                expected,
            },
            path: None,
            loc: None,
        }
    }

    fn missing_field(field: &'static str) -> Self {
        DeError {
            kind: DeErrorKind::MissingField(field),
            path: None,
            loc: None,
        }
    }
}

/// The result of [`from_node_collecting`].
#[derive(Debug)]
pub struct Collected<T> {
    /// The value, when every problem was an unknown key: those entries were dropped and
    /// the rest is exactly what the user wrote, sound enough to validate further.
    pub value: Option<T>,
    /// Every problem found, in the order of the file.
    pub errors: Vec<DeError>,
}

/// Deserializes `T` from `root`, collecting every problem serde finds.
///
/// After each problem the tree is repaired and deserialization retried, so that one run
/// reports every unknown key, bad value and missing key: an unknown key's entry is dropped,
/// a bad value is replaced by a neutral value of the right shape, a missing key is added
/// with one.
pub fn from_node_collecting<T: DeserializeOwned>(root: &Node) -> Collected<T> {
    const MAX_ROUNDS: usize = 200;
    let mut tree = root.clone();
    let mut errors: Vec<DeError> = Vec::new();
    let mut only_pruned = true;
    let mut value = None;
    for _ in 0..MAX_ROUNDS {
        let err = match T::deserialize(NodeDe {
            node: &tree,
            path: Vec::new(),
        }) {
            Ok(v) => {
                value = only_pruned.then_some(v);
                break;
            }
            Err(err) => err,
        };
        let path = err.path.clone().unwrap_or_default();
        let repaired = match &err.kind {
            DeErrorKind::UnknownField { .. } => tree.prune(&path),
            DeErrorKind::MissingField(field) => {
                only_pruned = false;
                let mut full = path.clone();
                full.push(PathPart::Key((*field).to_string()));
                tree.insert_null(&path, field) && substitute::<T>(&mut tree, &full, None)
            }
            DeErrorKind::UnknownVariant { .. }
            | DeErrorKind::InvalidType { .. }
            | DeErrorKind::Other(_) => {
                only_pruned = false;
                substitute::<T>(&mut tree, &path, Some(&err)) || tree.prune(&path)
            }
        };
        errors.push(err);
        if !repaired {
            break;
        }
    }
    errors.sort_by_key(|e| e.loc);
    Collected { value, errors }
}

/// Replaces the node at `path` with the first neutral value that `T` accepts there.
fn substitute<T: DeserializeOwned>(
    tree: &mut Node,
    path: &[PathPart],
    err: Option<&DeError>,
) -> bool {
    let Some(original) = tree.get_path(path).cloned() else {
        return false;
    };
    let scalar = |value: &str, plain: bool| NodeKind::Scalar {
        value: value.to_string(),
        plain,
    };
    let mut candidates = Vec::new();
    if let Some(DeErrorKind::UnknownVariant { expected, .. }) = err.map(|e| &e.kind) {
        candidates.extend(expected.first().map(|v| scalar(v, true)));
    }
    candidates.extend([
        scalar("0", true),
        scalar("placeholder", false),
        scalar("true", true),
        NodeKind::Seq(Vec::new()),
        NodeKind::Map(Vec::new()),
    ]);
    for kind in candidates {
        if let Some(slot) = tree.get_path_mut(path) {
            slot.kind = kind;
        }
        let next = T::deserialize(NodeDe {
            node: tree,
            path: Vec::new(),
        });
        match next {
            Err(e) if e.path.as_deref() == Some(path) => {}
            _ => return true,
        }
    }
    if let Some(slot) = tree.get_path_mut(path) {
        *slot = original;
    }
    false
}

struct NodeDe<'a> {
    node: &'a Node,
    path: Vec<PathPart>,
}

impl NodeDe<'_> {
    fn fail(&self, err: DeError) -> DeError {
        err.at(&self.path, self.node.loc)
    }

    fn invalid_type(&self, exp: &dyn de::Expected) -> DeError {
        let unexp = match &self.node.kind {
            NodeKind::Scalar { value, .. } => de::Unexpected::Str(value),
            NodeKind::Seq(_) => de::Unexpected::Seq,
            NodeKind::Map(_) => de::Unexpected::Map,
        };
        self.type_error(exp.to_string(), describe_unexpected(&unexp))
    }

    fn type_error(&self, expected: String, found: String) -> DeError {
        self.fail(DeError {
            kind: DeErrorKind::InvalidType { expected, found },
            path: None,
            loc: None,
        })
    }

    fn scalar(&self) -> Option<(&str, bool)> {
        match &self.node.kind {
            NodeKind::Scalar { value, plain } => Some((value, *plain)),
            _ => None,
        }
    }

    fn parse_number<T: std::str::FromStr>(&self, exp: &str) -> Result<T, DeError> {
        match self.scalar() {
            Some((value, true)) => value
                .parse::<T>()
                .map_err(|_| self.type_error(exp.to_string(), format!("`{value}`"))),
            Some((value, false)) => {
                Err(self.type_error(exp.to_string(), format!("the quoted string \"{value}\"")))
            }
            None => Err(self.invalid_type(&exp)),
        }
    }
}

fn describe_unexpected(unexp: &de::Unexpected<'_>) -> String {
    match unexp {
        de::Unexpected::Str("") => "an empty value".to_string(),
        de::Unexpected::Str(s) => format!("`{s}`"),
        de::Unexpected::Seq => "a list".to_string(),
        de::Unexpected::Map => "a mapping".to_string(),
        other => other.to_string(),
    }
}

macro_rules! deserialize_number {
    ($($method:ident => $visit:ident : $ty:ty, $what:literal;)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
                let n: $ty = self.parse_number($what)?;
                visitor.$visit(n).map_err(|e| self.fail(e))
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for NodeDe<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.kind {
            NodeKind::Scalar { value, plain } => {
                let result = if *plain && is_null_scalar(value) {
                    visitor.visit_unit()
                } else if *plain && (value == "true" || value == "false") {
                    visitor.visit_bool(value == "true")
                } else if let (true, Ok(n)) = (*plain, value.parse::<i64>()) {
                    visitor.visit_i64(n)
                } else {
                    visitor.visit_str(value)
                };
                result.map_err(|e| self.fail(e))
            }
            NodeKind::Seq(_) => self.deserialize_seq(visitor),
            NodeKind::Map(_) => self.deserialize_map(visitor),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.scalar() {
            Some(("true", true)) => visitor.visit_bool(true).map_err(|e| self.fail(e)),
            Some(("false", true)) => visitor.visit_bool(false).map_err(|e| self.fail(e)),
            _ => Err(self.invalid_type(&"true or false")),
        }
    }

    deserialize_number! {
        deserialize_i8 => visit_i8: i8, "a whole number";
        deserialize_i16 => visit_i16: i16, "a whole number";
        deserialize_i32 => visit_i32: i32, "a whole number";
        deserialize_i64 => visit_i64: i64, "a whole number";
        deserialize_u8 => visit_u8: u8, "a whole number from 0 to 255";
        deserialize_u16 => visit_u16: u16, "a whole number from 0 to 65535";
        deserialize_u32 => visit_u32: u32, "a whole number (not negative)";
        deserialize_u64 => visit_u64: u64, "a whole number (not negative)";
        deserialize_f32 => visit_f32: f32, "a number";
        deserialize_f64 => visit_f64: f64, "a number";
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.scalar() {
            Some((value, plain)) if !(plain && is_null_scalar(value)) => {
                visitor.visit_str(value).map_err(|e| self.fail(e))
            }
            _ => Err(self.invalid_type(&"a string")),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.node.is_null() {
            visitor.visit_none().map_err(|e| self.fail(e))
        } else {
            let path = self.path.clone();
            let loc = self.node.loc;
            visitor.visit_some(self).map_err(|e| e.at(&path, loc))
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.node.is_null() {
            visitor.visit_unit().map_err(|e| self.fail(e))
        } else {
            Err(self.invalid_type(&"nothing (null)"))
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let path = self.path.clone();
        let loc = self.node.loc;
        visitor
            .visit_newtype_struct(self)
            .map_err(|e| e.at(&path, loc))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.kind {
            NodeKind::Seq(items) => visitor
                .visit_seq(SeqDe {
                    items,
                    index: 0,
                    path: &self.path,
                })
                .map_err(|e| self.fail(e)),
            _ if self.node.is_null() => visitor
                .visit_seq(SeqDe {
                    items: &[],
                    index: 0,
                    path: &self.path,
                })
                .map_err(|e| self.fail(e)),
            _ => Err(self.invalid_type(&"a list")),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.kind {
            NodeKind::Map(entries) => visitor
                .visit_map(MapDe {
                    entries,
                    index: 0,
                    path: &self.path,
                })
                .map_err(|e| self.fail(e)),
            _ if self.node.is_null() => visitor
                .visit_map(MapDe {
                    entries: &[],
                    index: 0,
                    path: &self.path,
                })
                .map_err(|e| self.fail(e)),
            _ => Err(self.invalid_type(&"a mapping (key: value lines)")),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.kind {
            NodeKind::Scalar { value, .. } => visitor
                .visit_enum(UnitVariant { name: value })
                .map_err(|e| self.fail(e)),
            // `kind: {fields}`: a variant with content, written as a one-key mapping.
            NodeKind::Map(entries) if entries.len() == 1 => {
                let (key, value) = &entries[0];
                let mut path = self.path.clone();
                path.push(PathPart::Key(key.as_str().unwrap_or("?").to_string()));
                // Errors inside the settings carry their own paths; a bad kind is the
                // element's problem, so that the whole element can be dropped.
                let key_loc = key.loc;
                visitor
                    .visit_enum(MapVariant { key, value, path })
                    .map_err(|e| e.at(&self.path, key_loc))
            }
            _ => Err(self.invalid_type(&"one of the listed kinds, as `kind: {...}`")),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }
}

struct SeqDe<'a> {
    items: &'a [Node],
    index: usize,
    path: &'a [PathPart],
}

impl<'de> SeqAccess<'de> for SeqDe<'_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some(node) = self.items.get(self.index) else {
            return Ok(None);
        };
        let mut path = self.path.to_vec();
        path.push(PathPart::Index(self.index));
        self.index += 1;
        let loc = node.loc;
        seed.deserialize(NodeDe {
            node,
            path: path.clone(),
        })
        .map(Some)
        .map_err(|e| e.at(&path, loc))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len() - self.index)
    }
}

struct MapDe<'a> {
    entries: &'a [(Node, Node)],
    index: usize,
    path: &'a [PathPart],
}

impl MapDe<'_> {
    fn entry_path(&self) -> Vec<PathPart> {
        let mut path = self.path.to_vec();
        if let Some((key, _)) = self.entries.get(self.index) {
            path.push(PathPart::Key(key.as_str().unwrap_or("?").to_string()));
        }
        path
    }
}

impl<'de> MapAccess<'de> for MapDe<'_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((key, _)) = self.entries.get(self.index) else {
            return Ok(None);
        };
        let path = self.entry_path();
        if key.as_str().is_none() {
            return Err(DeError {
                kind: DeErrorKind::Other(
                    "a key must be a plain word, not a list or mapping".into(),
                ),
                path: None,
                loc: None,
            }
            .at(&path, key.loc));
        }
        seed.deserialize(NodeDe {
            node: key,
            path: path.clone(),
        })
        .map(Some)
        .map_err(|e| e.at(&path, key.loc))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let path = self.entry_path();
        let (_, value) = &self.entries[self.index];
        self.index += 1;
        seed.deserialize(NodeDe {
            node: value,
            path: path.clone(),
        })
        .map_err(|e| e.at(&path, value.loc))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len() - self.index)
    }
}

struct MapVariant<'a> {
    key: &'a Node,
    value: &'a Node,
    path: Vec<PathPart>,
}

impl<'de> EnumAccess<'de> for MapVariant<'_> {
    type Error = DeError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), DeError> {
        let name = self.key.as_str().unwrap_or_default();
        let de: de::value::StrDeserializer<'_, DeError> = name.into_deserializer();
        let value = seed.deserialize(de)?;
        Ok((value, self))
    }
}

impl<'de> VariantAccess<'de> for MapVariant<'_> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        if self.value.is_null() {
            Ok(())
        } else {
            Err(de::Error::custom("this kind takes no settings"))
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(NodeDe {
            node: self.value,
            path: self.path,
        })
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_seq(
            NodeDe {
                node: self.value,
                path: self.path,
            },
            visitor,
        )
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_map(
            NodeDe {
                node: self.value,
                path: self.path,
            },
            visitor,
        )
    }
}

struct UnitVariant<'a> {
    name: &'a str,
}

impl<'de> EnumAccess<'de> for UnitVariant<'_> {
    type Error = DeError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), DeError> {
        let de: de::value::StrDeserializer<'_, DeError> = self.name.into_deserializer();
        let value = seed.deserialize(de)?;
        Ok((value, self))
    }
}

impl<'de> VariantAccess<'de> for UnitVariant<'_> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, _seed: T) -> Result<T::Value, DeError> {
        Err(de::Error::custom("expected a plain word"))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, _visitor: V) -> Result<V::Value, DeError> {
        Err(de::Error::custom("expected a plain word"))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, DeError> {
        Err(de::Error::custom("expected a plain word"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        port: u16,
        #[serde(default)]
        tags: Vec<String>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        name: String,
        inner: Inner,
        #[serde(default)]
        items: Vec<Inner>,
        mode: Option<Mode>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "kebab-case")]
    enum Mode {
        Stacked,
        External,
    }

    #[test]
    fn enums_with_content_are_one_key_mappings() {
        #[derive(Debug, Deserialize, PartialEq)]
        #[serde(rename_all = "kebab-case", deny_unknown_fields)]
        enum Res {
            File { path: String },
            Module(String),
        }
        let root =
            parse("- file: {path: /a}\n- module: br_netfilter\n- file: {pth: /b}\n- dir: {}\n")
                .unwrap();
        let c = from_node_collecting::<Vec<Res>>(&root);
        let msgs: Vec<(String, Loc)> = c
            .errors
            .iter()
            .map(|e| (e.message().0, e.loc.unwrap()))
            .collect();
        assert_eq!(
            msgs,
            vec![
                (
                    "missing key `path` in `[2].file`".to_string(),
                    Loc { line: 3, col: 9 }
                ),
                (
                    "unknown key `pth` in `[2].file`".to_string(),
                    Loc { line: 3, col: 10 }
                ),
                (
                    "`dir` is not a valid value for `[3]`".to_string(),
                    Loc { line: 4, col: 3 }
                ),
            ]
        );
        let root = parse("- file: {path: /a}\n- module: br_netfilter\n").unwrap();
        assert_eq!(
            from_node_collecting::<Vec<Res>>(&root).value.unwrap(),
            vec![
                Res::File { path: "/a".into() },
                Res::Module("br_netfilter".into())
            ]
        );
    }

    #[test]
    fn positions_are_one_based() {
        let root = parse("a:\n  b: 1\n").unwrap();
        assert_eq!(root.locate(&["a", "b"]), Loc { line: 2, col: 6 });
        assert_eq!(root.locate_key(&["a"], "b"), Loc { line: 2, col: 3 });
    }

    #[test]
    fn deserializes_a_valid_document() {
        let root = parse(
            "name: x\ninner:\n  port: 22\n  tags: [a, b]\nmode: external\nitems:\n  - port: 1\n",
        )
        .unwrap();
        let outer: Outer = from_node_collecting(&root).value.unwrap();
        assert_eq!(outer.inner.port, 22);
        assert_eq!(outer.inner.tags, vec!["a", "b"]);
        assert_eq!(outer.mode, Some(Mode::External));
        assert_eq!(outer.items.len(), 1);
    }

    #[test]
    fn reports_every_unknown_key_and_bad_value_at_once() {
        let text = "name: x\nnmae: y\ninner:\n  port: 99999\n  prot: 1\nmode: stacke\nitems:\n  - port: 1\n    extra: 2\n";
        let root = parse(text).unwrap();
        let collected = from_node_collecting::<Outer>(&root);
        assert!(collected.value.is_none());
        let errors = collected.errors;
        let found: Vec<(String, Loc)> = errors
            .iter()
            .map(|e| (e.message().0, e.loc.unwrap()))
            .collect();
        assert_eq!(
            found,
            vec![
                (
                    "unknown key `nmae` in the top level".to_string(),
                    Loc { line: 2, col: 1 }
                ),
                (
                    "`inner.port` is `99999`".to_string(),
                    Loc { line: 4, col: 9 }
                ),
                (
                    "unknown key `prot` in `inner`".to_string(),
                    Loc { line: 5, col: 3 }
                ),
                (
                    "`stacke` is not a valid value for `mode`".to_string(),
                    Loc { line: 6, col: 7 }
                ),
                (
                    "unknown key `extra` in `items[0]`".to_string(),
                    Loc { line: 9, col: 5 }
                ),
            ]
        );
        assert_eq!(
            errors[0].message().1.unwrap(),
            "did you mean `name`? valid keys: name, inner, items, mode"
        );
    }

    #[test]
    fn missing_key_is_reported_with_its_mapping() {
        let root = parse("inner:\n  port: 1\n").unwrap();
        let errors = from_node_collecting::<Outer>(&root).errors;
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].message().0, "missing key `name` in the top level");
        // Unknown keys alone leave a sound value behind.
        let root = parse("name: x\nzzz: 1\ninner:\n  port: 1\n").unwrap();
        let collected = from_node_collecting::<Outer>(&root);
        assert_eq!(collected.errors.len(), 1);
        assert_eq!(collected.value.unwrap().name, "x");
    }

    #[test]
    fn duplicate_keys_and_syntax_errors_have_positions() {
        let err = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(err.loc, Loc { line: 3, col: 1 });
        assert!(err.message.contains("duplicate key `a`"));
        let err = parse("a: [1, 2\n").unwrap_err();
        assert!(err.loc.line >= 1);
        assert!(parse("").is_err());
        assert!(parse("a: 1\n---\nb: 2\n").is_err());
    }

    #[test]
    fn quoted_numbers_stay_strings_and_aliases_resolve() {
        #[derive(Debug, Deserialize)]
        struct S {
            a: String,
            b: Vec<String>,
        }
        let root = parse("a: \"007\"\nb: &x [p, q]\n").unwrap();
        let s: S = from_node_collecting(&root).value.unwrap();
        assert_eq!(s.a, "007");
        assert_eq!(s.b, vec!["p", "q"]);
    }
}
