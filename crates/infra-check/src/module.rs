//! One Terraform module (a directory of `.tf` files) parsed into its
//! declarations and the references its expressions make.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use hcl::expr::{ForExpr, Operation, TemplateExpr, TraversalOperator};
use hcl::template::{Directive, Element};
use hcl::{Block, Body, Expression, ObjectKey, Structure, Template};

use crate::{CheckError, Location, Problem, tf_files};

/// Arguments of a `module` block that are not input variables.
const MODULE_META_ARGUMENTS: &[&str] = &[
    "source",
    "version",
    "count",
    "for_each",
    "providers",
    "depends_on",
];

/// Names that are always in scope.
const GLOBAL_NAMES: &[&str] = &["path", "terraform"];

/// A `variable` block.
#[derive(Debug, Clone)]
pub struct Variable {
    /// Its name.
    pub name: String,
    /// Whether it has a `default` (a caller may then omit it).
    pub has_default: bool,
    /// Its `description`, if any.
    pub description: Option<String>,
    /// Where it is declared.
    pub location: Location,
}

/// An `output` block.
#[derive(Debug, Clone)]
pub struct Output {
    /// Its name.
    pub name: String,
    /// Its `description`, if any.
    pub description: Option<String>,
    /// How many references its `value` makes (0: a constant, likely a slip).
    pub references: usize,
    /// Where it is declared.
    pub location: Location,
}

/// A `module` block: a call into another module.
#[derive(Debug, Clone)]
pub struct ModuleCall {
    /// The local name (`module.<name>`).
    pub name: String,
    /// The `source` string, when it is a plain string.
    pub source: Option<String>,
    /// The input variables passed (meta-arguments excluded).
    pub arguments: BTreeSet<String>,
    /// Where the block is.
    pub location: Location,
}

/// Something an expression refers to, by the root of its traversal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// `var.<name>`.
    Variable(String),
    /// `local.<name>`.
    Local(String),
    /// `module.<name>` or `module.<name>[i].<output>`.
    Module {
        /// The module call's name.
        name: String,
        /// The output read, when one is.
        output: Option<String>,
    },
    /// `<type>.<name>`.
    Resource {
        /// The resource type, e.g. `aws_lb`.
        kind: String,
        /// The resource's name.
        name: String,
    },
    /// `data.<type>.<name>`.
    Data {
        /// The data source type.
        kind: String,
        /// The data source's name.
        name: String,
    },
    /// A name that is none of the above and not in scope.
    Unknown(String),
}

/// A [`Reference`] and where it is made.
#[derive(Debug, Clone)]
pub struct ReferenceAt {
    /// What is referenced.
    pub reference: Reference,
    /// Where.
    pub location: Location,
}

/// A parsed module.
#[derive(Debug, Clone, Default)]
pub struct Module {
    /// Its directory.
    pub dir: PathBuf,
    /// Its `.tf` files.
    pub files: Vec<PathBuf>,
    /// `variable` blocks by name.
    pub variables: BTreeMap<String, Variable>,
    /// `output` blocks by name.
    pub outputs: BTreeMap<String, Output>,
    /// Names of `locals` entries.
    pub locals: BTreeSet<String>,
    /// Managed resources as `type.name`.
    pub resources: BTreeSet<String>,
    /// Data sources as `type.name`.
    pub data: BTreeSet<String>,
    /// `module` blocks by name.
    pub calls: BTreeMap<String, ModuleCall>,
    /// Every reference made by an expression.
    pub references: Vec<ReferenceAt>,
    /// Problems seen while parsing (duplicates, bad templates, odd blocks).
    pub problems: Vec<Problem>,
}

/// Whether a module `source` is a local path (the only kind checked offline).
pub fn is_local_source(source: &str) -> bool {
    source.starts_with("./") || source.starts_with("../")
}

impl Module {
    /// Parses every `.tf` file directly in `dir`.
    pub fn load(dir: &Path) -> Result<Self, CheckError> {
        let mut module = Module {
            dir: dir.to_owned(),
            files: tf_files(dir)?,
            ..Module::default()
        };
        for file in module.files.clone() {
            let text = std::fs::read_to_string(&file).map_err(|source| CheckError::Io {
                path: file.clone(),
                source,
            })?;
            let body = hcl::parse(&text).map_err(|e| CheckError::Parse {
                path: file.clone(),
                message: e.to_string(),
            })?;
            module.add_file(&file, &body);
        }
        Ok(module)
    }

    /// Parses one file's text as part of this module (tests use this for
    /// in-memory fixtures).
    pub fn add_source(&mut self, file: &Path, text: &str) -> Result<(), CheckError> {
        let body = hcl::parse(text).map_err(|e| CheckError::Parse {
            path: file.to_owned(),
            message: e.to_string(),
        })?;
        self.add_file(file, &body);
        Ok(())
    }

    fn add_file(&mut self, file: &Path, body: &Body) {
        for structure in body.iter() {
            match structure {
                Structure::Attribute(attribute) => self.problems.push(Problem {
                    location: Location {
                        file: file.to_owned(),
                        block: String::new(),
                    },
                    message: format!(
                        "top-level attribute {:?}: Terraform files hold blocks only",
                        attribute.key.as_str()
                    ),
                }),
                Structure::Block(block) => self.add_block(file, block),
            }
        }
    }

    fn add_block(&mut self, file: &Path, block: &Block) {
        let labels: Vec<&str> = block.labels.iter().map(|l| l.as_str()).collect();
        let kind = block.identifier.as_str();
        let location = |what: String| Location {
            file: file.to_owned(),
            block: what,
        };
        let wanted_labels = match kind {
            "resource" | "data" => 2,
            "variable" | "output" | "module" | "provider" | "check" => 1,
            _ => 0,
        };
        if labels.len() != wanted_labels && !matches!(kind, "terraform" | "locals") {
            self.problems.push(Problem {
                location: location(kind.to_owned()),
                message: format!(
                    "{kind} block needs {wanted_labels} label(s), has {}",
                    labels.len()
                ),
            });
            return;
        }
        match kind {
            "terraform" | "moved" | "import" | "removed" => {}
            "variable" => {
                let name = labels[0].to_owned();
                let at = location(format!("variable {name}"));
                if self.variables.contains_key(&name) {
                    self.duplicate(&at, "variable");
                }
                // The body (type, default, validation) names only the
                // variable itself; it does not count as a use.
                let variable = Variable {
                    has_default: attribute(&block.body, "default").is_some(),
                    description: string_attribute(&block.body, "description"),
                    name: name.clone(),
                    location: at,
                };
                self.variables.insert(name, variable);
            }
            "output" => {
                let name = labels[0].to_owned();
                let at = location(format!("output {name}"));
                if self.outputs.contains_key(&name) {
                    self.duplicate(&at, "output");
                }
                let before = self.references.len();
                if let Some(value) = attribute(&block.body, "value") {
                    self.walker(&at).expr(value, &Scope::default());
                } else {
                    self.problems.push(Problem {
                        location: at.clone(),
                        message: "output has no value".into(),
                    });
                }
                let references = self.references.len() - before;
                self.walker(&at).body(
                    &block.body,
                    &Scope::default(),
                    &["value", "description", "sensitive"],
                );
                let output = Output {
                    description: string_attribute(&block.body, "description"),
                    name: name.clone(),
                    references,
                    location: at,
                };
                self.outputs.insert(name, output);
            }
            "locals" => {
                for attribute in block.body.attributes() {
                    let name = attribute.key.as_str().to_owned();
                    let at = location(format!("local {name}"));
                    if !self.locals.insert(name) {
                        self.duplicate(&at, "local value");
                    }
                    self.walker(&at).expr(&attribute.expr, &Scope::default());
                }
            }
            "resource" | "data" => {
                let address = format!("{}.{}", labels[0], labels[1]);
                let at = location(format!("{kind} {address}"));
                let set = if kind == "resource" {
                    &mut self.resources
                } else {
                    &mut self.data
                };
                if !set.insert(address) {
                    self.duplicate(&at, kind);
                }
                let scope = Scope::with(&["count", "each", "self"]);
                self.walker(&at).body(&block.body, &scope, &["provider"]);
            }
            "module" => {
                let name = labels[0].to_owned();
                let at = location(format!("module {name}"));
                if self.calls.contains_key(&name) {
                    self.duplicate(&at, "module");
                }
                let arguments = block
                    .body
                    .attributes()
                    .map(|a| a.key.as_str())
                    .filter(|key| !MODULE_META_ARGUMENTS.contains(key))
                    .map(str::to_owned)
                    .collect();
                let call = ModuleCall {
                    name: name.clone(),
                    source: string_attribute(&block.body, "source"),
                    arguments,
                    location: at.clone(),
                };
                self.calls.insert(name, call);
                self.walker(&at).body(
                    &block.body,
                    &Scope::with(&["count", "each"]),
                    &["source", "version", "providers"],
                );
            }
            "provider" => {
                let at = location(format!("provider {}", labels[0]));
                self.walker(&at)
                    .body(&block.body, &Scope::default(), &["alias"]);
            }
            "check" => {
                let at = location(format!("check {}", labels[0]));
                self.walker(&at).body(&block.body, &Scope::default(), &[]);
            }
            other => self.problems.push(Problem {
                location: location(other.to_owned()),
                message: format!("unknown top-level block {other:?}"),
            }),
        }
    }

    fn duplicate(&mut self, at: &Location, what: &str) {
        self.problems.push(Problem {
            location: at.clone(),
            message: format!("{what} declared twice"),
        });
    }

    fn walker(&mut self, location: &Location) -> Walker<'_> {
        Walker {
            location: location.clone(),
            references: &mut self.references,
            problems: &mut self.problems,
        }
    }
}

impl ModuleCall {
    pub(crate) fn problem(&self, message: impl Into<String>) -> Problem {
        Problem {
            location: self.location.clone(),
            message: message.into(),
        }
    }
}

impl Output {
    pub(crate) fn problem(&self, message: impl Into<String>) -> Problem {
        Problem {
            location: self.location.clone(),
            message: message.into(),
        }
    }
}

fn attribute<'a>(body: &'a Body, key: &str) -> Option<&'a Expression> {
    body.attributes()
        .find(|a| a.key.as_str() == key)
        .map(|a| &a.expr)
}

fn string_attribute(body: &Body, key: &str) -> Option<String> {
    match attribute(body, key)? {
        Expression::String(s) => Some(s.clone()),
        Expression::TemplateExpr(t) => Some(t.to_string()),
        _ => None,
    }
}

/// Names bound where an expression is evaluated, besides the global ones.
#[derive(Debug, Clone, Default)]
struct Scope {
    names: Vec<String>,
}

impl Scope {
    fn with(names: &[&str]) -> Self {
        Scope {
            names: names.iter().map(|n| (*n).to_owned()).collect(),
        }
    }

    fn plus<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut scope = self.clone();
        scope.names.extend(names.into_iter().map(str::to_owned));
        scope
    }

    fn binds(&self, name: &str) -> bool {
        GLOBAL_NAMES.contains(&name) || self.names.iter().any(|n| n == name)
    }
}

/// Walks the expressions of one top-level block, recording references.
struct Walker<'m> {
    location: Location,
    references: &'m mut Vec<ReferenceAt>,
    problems: &'m mut Vec<Problem>,
}

impl Walker<'_> {
    fn body(&mut self, body: &Body, scope: &Scope, skip: &[&str]) {
        for structure in body.iter() {
            match structure {
                Structure::Attribute(attribute) => {
                    if !skip.contains(&attribute.key.as_str()) {
                        self.expr(&attribute.expr, scope);
                    }
                }
                Structure::Block(block) => self.block(block, scope),
            }
        }
    }

    fn block(&mut self, block: &Block, scope: &Scope) {
        match block.identifier.as_str() {
            // `ignore_changes` lists attribute names, not references.
            "lifecycle" => self.body(&block.body, scope, &["ignore_changes"]),
            "dynamic" => {
                let Some(label) = block.labels.first() else {
                    self.problem("dynamic block without a label".into());
                    return;
                };
                let iterator = match attribute(&block.body, "iterator") {
                    Some(Expression::Variable(v)) => v.as_str().to_owned(),
                    _ => label.as_str().to_owned(),
                };
                if let Some(for_each) = attribute(&block.body, "for_each") {
                    self.expr(for_each, scope);
                } else {
                    self.problem(format!("dynamic {:?} has no for_each", label.as_str()));
                }
                let inner = scope.plus([iterator.as_str()]);
                if let Some(labels) = attribute(&block.body, "labels") {
                    self.expr(labels, &inner);
                }
                for nested in block.body.blocks() {
                    if nested.identifier.as_str() == "content" {
                        self.body(&nested.body, &inner, &[]);
                    } else {
                        self.block(nested, scope);
                    }
                }
            }
            _ => self.body(&block.body, scope, &[]),
        }
    }

    fn expr(&mut self, expr: &Expression, scope: &Scope) {
        match expr {
            Expression::Array(items) => items.iter().for_each(|e| self.expr(e, scope)),
            Expression::Object(object) => {
                for (key, value) in object {
                    if let ObjectKey::Expression(key) = key {
                        // A bare `name = ...` key is a literal, even when it
                        // parses as a variable.
                        if !matches!(key, Expression::Variable(_)) {
                            self.expr(key, scope);
                        }
                    }
                    self.expr(value, scope);
                }
            }
            Expression::TemplateExpr(template) => self.template_expr(template, scope),
            Expression::Variable(variable) => self.reference(variable.as_str(), &[], scope),
            Expression::Traversal(traversal) => {
                match &traversal.expr {
                    Expression::Variable(root) => {
                        self.reference(root.as_str(), &traversal.operators, scope)
                    }
                    // Some hcl versions parse `!var.x` as `(!var).x`: the
                    // operand is still the traversal `var.x`.
                    Expression::Operation(operation) => match operation.as_ref() {
                        Operation::Unary(unary) => match &unary.expr {
                            Expression::Variable(root) => {
                                self.reference(root.as_str(), &traversal.operators, scope)
                            }
                            other => self.expr(other, scope),
                        },
                        Operation::Binary(_) => self.expr(&traversal.expr, scope),
                    },
                    other => self.expr(other, scope),
                }
                for operator in &traversal.operators {
                    if let TraversalOperator::Index(index) = operator {
                        self.expr(index, scope);
                    }
                }
            }
            Expression::FuncCall(call) => call.args.iter().for_each(|e| self.expr(e, scope)),
            Expression::Parenthesis(inner) => self.expr(inner, scope),
            Expression::Conditional(c) => {
                self.expr(&c.cond_expr, scope);
                self.expr(&c.true_expr, scope);
                self.expr(&c.false_expr, scope);
            }
            Expression::Operation(operation) => match operation.as_ref() {
                Operation::Unary(unary) => self.expr(&unary.expr, scope),
                Operation::Binary(binary) => {
                    self.expr(&binary.lhs_expr, scope);
                    self.expr(&binary.rhs_expr, scope);
                }
            },
            Expression::ForExpr(for_expr) => self.for_expr(for_expr, scope),
            // Literals, and variants a newer hcl may add.
            _ => {}
        }
    }

    fn for_expr(&mut self, for_expr: &ForExpr, scope: &Scope) {
        self.expr(&for_expr.collection_expr, scope);
        let inner = scope.plus(
            for_expr
                .key_var
                .iter()
                .map(|k| k.as_str())
                .chain([for_expr.value_var.as_str()]),
        );
        if let Some(key) = &for_expr.key_expr {
            self.expr(key, &inner);
        }
        self.expr(&for_expr.value_expr, &inner);
        if let Some(cond) = &for_expr.cond_expr {
            self.expr(cond, &inner);
        }
    }

    fn template_expr(&mut self, template: &TemplateExpr, scope: &Scope) {
        match Template::from_expr(template) {
            Ok(template) => self.template(&template, scope),
            Err(e) => self.problem(format!("string template does not parse: {e}")),
        }
    }

    fn template(&mut self, template: &Template, scope: &Scope) {
        for element in template.elements() {
            match element {
                Element::Literal(_) => {}
                Element::Interpolation(interpolation) => self.expr(&interpolation.expr, scope),
                Element::Directive(directive) => match Self::directive(directive) {
                    Directive::If(if_directive) => {
                        self.expr(&if_directive.cond_expr, scope);
                        self.template(&if_directive.true_template, scope);
                        if let Some(false_template) = &if_directive.false_template {
                            self.template(false_template, scope);
                        }
                    }
                    Directive::For(for_directive) => {
                        self.expr(&for_directive.collection_expr, scope);
                        let inner = scope.plus(
                            for_directive
                                .key_var
                                .iter()
                                .map(|k| k.as_str())
                                .chain([for_directive.value_var.as_str()]),
                        );
                        self.template(&for_directive.template, &inner);
                    }
                },
            }
        }
    }

    /// The directive itself, whether the `hcl` version boxes it or not.
    fn directive(directive: &Directive) -> &Directive {
        directive
    }

    /// Records what `root` followed by `operators` refers to.
    fn reference(&mut self, root: &str, operators: &[TraversalOperator], scope: &Scope) {
        if scope.binds(root) {
            return;
        }
        let mut attrs = operators.iter().filter_map(|op| match op {
            TraversalOperator::GetAttr(name) => Some(name.as_str().to_owned()),
            _ => None,
        });
        let first_attr = match operators.first() {
            Some(TraversalOperator::GetAttr(name)) => Some(name.as_str().to_owned()),
            _ => None,
        };
        let reference = match root {
            "var" | "local" => match first_attr {
                Some(name) if root == "var" => Reference::Variable(name),
                Some(name) => Reference::Local(name),
                None => Reference::Unknown(format!("{root} without an attribute name")),
            },
            "module" => match first_attr {
                Some(name) => {
                    // module.M[i].O: the output is the next attribute, past
                    // any index or splat.
                    attrs.next();
                    Reference::Module {
                        name,
                        output: attrs.next(),
                    }
                }
                None => Reference::Unknown("module without a module name".into()),
            },
            "data" => match (operators.first(), operators.get(1)) {
                (
                    Some(TraversalOperator::GetAttr(kind)),
                    Some(TraversalOperator::GetAttr(name)),
                ) => Reference::Data {
                    kind: kind.as_str().to_owned(),
                    name: name.as_str().to_owned(),
                },
                _ => Reference::Unknown("data without a type and a name".into()),
            },
            "count" | "each" | "self" => {
                Reference::Unknown(format!("{root} outside a block that defines it"))
            }
            kind => match first_attr {
                Some(name) => Reference::Resource {
                    kind: kind.to_owned(),
                    name,
                },
                None => Reference::Unknown(format!("{kind} (not a variable in scope)")),
            },
        };
        self.references.push(ReferenceAt {
            reference,
            location: self.location.clone(),
        });
    }

    fn problem(&mut self, message: String) {
        self.problems.push(Problem {
            location: self.location.clone(),
            message,
        });
    }
}
