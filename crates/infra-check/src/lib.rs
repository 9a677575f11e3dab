//! Static checks of edgepush's Terraform (`infra/`), with the `hcl` crate:
//! the part of `terraform validate` that needs no provider, which
//! `terraform fmt`, `tflint` and `checkov` (`scripts/check-infra`) do not
//! do. `terraform validate` itself needs the AWS provider plugin, which
//! cannot be downloaded on the project's machines.
//!
//! - every `var.X`, `local.X`, resource (`aws_x.name`) and data source
//!   (`data.aws_x.name`) that an expression names is declared in the same
//!   module (directory);
//! - every argument a `module` block passes is a variable that module
//!   declares, and every variable it declares without a default is passed;
//! - every `module.M.O` names a declared module `M` and an output `O` that
//!   `M`'s source declares;
//! - every output references something.
//!
//! What the tools check is left to them: syntax and formatting (`terraform
//! fmt`), descriptions, unused declarations, module sources that do not
//! exist, the standard module layout (`tflint`), security settings
//! (`checkov`). The checker still reports a file it cannot parse or a module
//! source it cannot load, since it cannot go on without them.
//!
//! Out of reach: provider schemas (attribute names and types of resources),
//! type checking, and function names. Scoped names are understood: `count`,
//! `each` and `self` inside resources and module calls, `for` expression and
//! template variables, and `dynamic` block iterators.
//!
//! ```no_run
//! let report = edgepush_infra_check::check_tree("infra".as_ref(), &[]).expect("readable");
//! for problem in &report.problems {
//!     eprintln!("{problem}");
//! }
//! ```

mod module;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use module::{Module, ModuleCall, Output, Reference, ReferenceAt, Variable, is_local_source};

/// Where a declaration or reference sits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    /// The `.tf` file (or, for problems of a whole module, its directory).
    pub file: PathBuf,
    /// The top-level block, e.g. `resource aws_lb.this` or `output nlb_dns_name`.
    pub block: String,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.block.is_empty() {
            write!(f, "{}", self.file.display())
        } else {
            write!(f, "{}: {}", self.file.display(), self.block)
        }
    }
}

/// One thing wrong with the Terraform code.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// Where it is.
    pub location: Location,
    /// What is wrong, naming the offending name.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// A module could not be read at all (an I/O failure, or a file that does
/// not parse). [`check_tree`] turns parse failures into [`Problem`]s.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Reading a directory or file failed.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// What was being read.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A `.tf` file is not valid HCL.
    #[error("{} does not parse: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
}

/// The result of [`check_tree`].
#[derive(Debug, Default)]
pub struct Report {
    /// Every `.tf` file found (parsed or not).
    pub files: Vec<PathBuf>,
    /// Every directory holding `.tf` files, i.e. every module checked.
    pub modules: Vec<PathBuf>,
    /// Everything wrong, sorted by location.
    pub problems: Vec<Problem>,
}

/// Checks every module (directory with `.tf` files) under `root`, skipping
/// `.terraform` and hidden directories and every directory in `exclude`
/// (and what is below them).
///
/// Only an unreadable directory is an error; everything else is a
/// [`Problem`] in the report.
pub fn check_tree(root: &Path, exclude: &[PathBuf]) -> Result<Report, CheckError> {
    let mut report = Report::default();
    let mut dirs = Vec::new();
    collect_dirs(root, exclude, &mut dirs)?;
    let mut cache = ModuleCache::default();
    for dir in dirs {
        let files = tf_files(&dir)?;
        if files.is_empty() {
            continue;
        }
        report.files.extend(files);
        report
            .problems
            .extend(check_module_cached(&dir, &mut cache)?);
        report.modules.push(dir);
    }
    report.problems.sort();
    report.problems.dedup();
    Ok(report)
}

/// Checks one module (a directory) and its calls into local child modules.
pub fn check_module(dir: &Path) -> Result<Vec<Problem>, CheckError> {
    let mut problems = check_module_cached(dir, &mut ModuleCache::default())?;
    problems.sort();
    Ok(problems)
}

/// The entries directly in `dir`, sorted by path.
fn entries(dir: &Path) -> Result<Vec<std::fs::DirEntry>, CheckError> {
    let io = |source| CheckError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut entries = std::fs::read_dir(dir)
        .map_err(io)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io)?;
    entries.sort_by_key(std::fs::DirEntry::path);
    Ok(entries)
}

/// The `.tf` files directly in `dir`, sorted.
pub fn tf_files(dir: &Path) -> Result<Vec<PathBuf>, CheckError> {
    Ok(entries(dir)?
        .into_iter()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "tf") && path.is_file())
        .collect())
}

fn collect_dirs(dir: &Path, exclude: &[PathBuf], out: &mut Vec<PathBuf>) -> Result<(), CheckError> {
    if exclude.iter().any(|skip| same_path(skip, dir)) {
        return Ok(());
    }
    out.push(dir.to_owned());
    for entry in entries(dir)? {
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if path.is_dir() && !hidden {
            collect_dirs(&path, exclude, out)?;
        }
    }
    Ok(())
}

/// `path` without `.` components and with `dir/..` pairs folded, so that
/// messages name `infra/modules/x`, not `infra/./modules/x`.
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn same_path(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Modules loaded so far, by canonical directory: a child module is parsed
/// once however many parents call it.
#[derive(Default)]
struct ModuleCache {
    loaded: BTreeMap<PathBuf, Result<Module, String>>,
}

impl ModuleCache {
    fn get(&mut self, dir: &Path) -> Result<&Result<Module, String>, CheckError> {
        let key = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
        if !self.loaded.contains_key(&key) {
            let loaded = match Module::load(dir) {
                Ok(module) => Ok(module),
                Err(CheckError::Parse { path, message }) => {
                    Err(format!("{} does not parse: {message}", path.display()))
                }
                Err(e) => return Err(e),
            };
            self.loaded.insert(key.clone(), loaded);
        }
        Ok(&self.loaded[&key])
    }
}

fn check_module_cached(dir: &Path, cache: &mut ModuleCache) -> Result<Vec<Problem>, CheckError> {
    let module = match cache.get(dir)? {
        Ok(module) => module.clone(),
        Err(message) => {
            return Ok(vec![Problem {
                location: Location {
                    file: dir.to_owned(),
                    block: String::new(),
                },
                message: message.clone(),
            }]);
        }
    };
    let mut problems = module.problems.clone();

    // Child modules, loaded for the module.M.O and argument checks.
    let mut children: BTreeMap<String, Module> = BTreeMap::new();
    for call in module.calls.values() {
        let Some(source) = &call.source else {
            problems.push(call.problem("module block has no `source`"));
            continue;
        };
        if !is_local_source(source) {
            // Registry or VCS sources cannot be checked offline.
            continue;
        }
        let child_dir = normalize(&dir.join(source));
        if !child_dir.is_dir() {
            problems.push(call.problem(format!(
                "module source {source:?} does not exist ({})",
                child_dir.display()
            )));
            continue;
        }
        if tf_files(&child_dir)?.is_empty() {
            problems.push(call.problem(format!("module source {source:?} holds no .tf file")));
            continue;
        }
        match cache.get(&child_dir)? {
            Ok(child) => {
                check_call(call, child, &mut problems);
                children.insert(call.name.clone(), child.clone());
            }
            Err(message) => problems.push(call.problem(format!(
                "module source {source:?} cannot be loaded: {message}"
            ))),
        }
    }

    for at in &module.references {
        if let Some(message) = unresolved(&module, &children, &at.reference) {
            problems.push(Problem {
                location: at.location.clone(),
                message,
            });
        }
    }

    // Descriptions and unused variables: tflint (terraform_documented_*,
    // terraform_unused_declarations).
    for output in module.outputs.values() {
        if output.references == 0 {
            problems.push(output.problem("output value references nothing"));
        }
    }
    Ok(problems)
}

/// The arguments of `call` against the variables of `child`.
fn check_call(call: &ModuleCall, child: &Module, problems: &mut Vec<Problem>) {
    for argument in &call.arguments {
        if !child.variables.contains_key(argument) {
            problems.push(call.problem(format!(
                "argument {argument:?} is not a variable of module source {:?}",
                call.source.as_deref().unwrap_or_default()
            )));
        }
    }
    for variable in child.variables.values() {
        if !variable.has_default && !call.arguments.contains(&variable.name) {
            problems.push(call.problem(format!(
                "required variable {:?} of module source {:?} is not passed",
                variable.name,
                call.source.as_deref().unwrap_or_default()
            )));
        }
    }
}

/// Why `reference` does not resolve in `module`, or `None` when it does.
fn unresolved(
    module: &Module,
    children: &BTreeMap<String, Module>,
    reference: &Reference,
) -> Option<String> {
    match reference {
        Reference::Variable(name) => (!module.variables.contains_key(name))
            .then(|| format!("var.{name} is not a declared variable of this module")),
        Reference::Local(name) => (!module.locals.contains(name))
            .then(|| format!("local.{name} is not a declared local value")),
        Reference::Resource { kind, name } => {
            (!module.resources.contains(&format!("{kind}.{name}")))
                .then(|| format!("{kind}.{name} is not a declared resource"))
        }
        Reference::Data { kind, name } => (!module.data.contains(&format!("{kind}.{name}")))
            .then(|| format!("data.{kind}.{name} is not a declared data source")),
        Reference::Module { name, output } => {
            if !module.calls.contains_key(name) {
                return Some(format!("module.{name} is not a declared module"));
            }
            let (Some(output), Some(child)) = (output, children.get(name)) else {
                // Either the whole module object, or a source that could
                // not be loaded (reported at the module block).
                return None;
            };
            (!child.outputs.contains_key(output)).then(|| {
                format!(
                    "module.{name}.{output}: module source {:?} declares no output {output:?}",
                    module.calls[name].source.as_deref().unwrap_or_default()
                )
            })
        }
        Reference::Unknown(text) => Some(format!("unknown reference {text}")),
    }
}
