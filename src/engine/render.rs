//! Templates: minijinja with strict undefined, trailing newlines kept, no ambient state.
//!
//! The same inputs always give byte-identical output: the context is built from sorted
//! maps, and nothing time- or environment-dependent is exposed to templates.

use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, UndefinedBehavior, Value};

use super::library::Library;

/// A template that failed to render: which template, where, which expression, why.
#[derive(Debug, Clone, thiserror::Error, miette::Diagnostic)]
#[error("{where_}: {message}")]
#[diagnostic(code(capstan::template))]
pub struct RenderError {
    /// `templates/NAME:LINE`, or the role file and position of an inline expression.
    pub where_: String,
    pub message: String,
    #[help]
    pub help: Option<String>,
}

pub struct Renderer {
    env: Environment<'static>,
}

impl Renderer {
    /// Templates are `templates/<name>` in `library`.
    pub fn new(library: &Library) -> Renderer {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_debug(true);
        if let Ok(syntax) = SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
        {
            env.set_syntax(syntax);
        }
        // A fingerprint of rendered text (16 hex digits of its sha256), for annotations that
        // roll a workload when its configuration changes.
        env.add_filter("sha256", |text: String| -> String {
            use sha2::Digest as _;
            hex::encode(&sha2::Sha256::digest(text.as_bytes())[..8])
        });
        // Templates render configs and units, never HTML.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        let library = library.clone();
        env.set_loader(move |name| {
            Ok(library
                .read(&format!("templates/{name}"))
                .map(|(text, _)| text))
        });
        Renderer { env }
    }

    /// Renders `templates/<name>` with `ctx`.
    pub fn render_template(&self, name: &str, ctx: &Value) -> Result<String, RenderError> {
        let template = self.env.get_template(name).map_err(|e| {
            if e.kind() == minijinja::ErrorKind::TemplateNotFound {
                RenderError {
                    where_: format!("templates/{name}"),
                    message: "no such template".into(),
                    help: Some(
                        "templates are files under templates/ (built in, or beside the inventory); check the role's `template:`".into(),
                    ),
                }
            } else {
                explain(&e, &format!("templates/{name}"))
            }
        })?;
        template
            .render(ctx)
            .map_err(|e| explain(&e, &format!("templates/{name}")))
    }

    /// Renders an inline string from a role file; `origin` names it in errors.
    pub fn render_str(&self, origin: &str, text: &str, ctx: &Value) -> Result<String, RenderError> {
        if !text.contains("{{") && !text.contains("{%") {
            return Ok(text.to_string());
        }
        self.env
            .render_str(text, ctx)
            .map_err(|e| explain(&e, origin))
    }
}

impl Renderer {
    /// Evaluates a role's `when` expression; `origin` names it in errors.
    pub fn condition(&self, origin: &str, expr: &str, ctx: &Value) -> Result<bool, RenderError> {
        let compiled = self
            .env
            .compile_expression(expr)
            .map_err(|e| explain(&e, origin))?;
        compiled
            .eval(ctx)
            .map(|v| v.is_true())
            .map_err(|e| explain(&e, origin))
    }
}

impl Renderer {
    /// Evaluates a resource's `for_each` expression to its items; `origin` names it in errors.
    pub fn items(&self, origin: &str, expr: &str, ctx: &Value) -> Result<Vec<Value>, RenderError> {
        let compiled = self
            .env
            .compile_expression(expr)
            .map_err(|e| explain(&e, origin))?;
        let value = compiled.eval(ctx).map_err(|e| explain(&e, origin))?;
        let items = value.try_iter().map_err(|_| RenderError {
            where_: origin.to_string(),
            message: format!("`{expr}` is not a list"),
            help: Some(
                "for_each takes an expression whose value is a list, e.g. computed.registries"
                    .into(),
            ),
        })?;
        Ok(items.collect())
    }
}

/// Names the place and the failing expression of a minijinja error.
fn explain(err: &minijinja::Error, origin: &str) -> RenderError {
    let where_ = match (err.name(), err.line()) {
        (Some(name), Some(line)) if name != "<string>" => {
            format!("templates/{}:{line}", name.trim_start_matches("templates/"))
        }
        _ => origin.to_string(),
    };
    let expression = match (err.template_source(), err.range()) {
        (Some(src), Some(range)) => src.get(range).map(str::to_string),
        _ => None,
    };
    let (message, help) = match (err.kind(), expression) {
        (minijinja::ErrorKind::UndefinedError, Some(expr)) => (
            format!("`{expr}` is undefined"),
            Some("templates see cluster, host, hosts, facts, vars, versions, pki and computed; check the name".to_string()),
        ),
        (_, Some(expr)) => (
            format!("{} in `{expr}`", err.detail().unwrap_or(&err.kind().to_string())),
            None,
        ),
        _ => (err.to_string(), None),
    };
    RenderError {
        where_,
        message,
        help,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::context;

    fn renderer(files: &[(&str, &str)]) -> (tempfile::TempDir, Renderer) {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let p = dir.path().join("templates").join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("templates")).unwrap();
        let r = Renderer::new(&Library::for_inventory(dir.path()));
        (dir, r)
    }

    #[test]
    fn keeps_trailing_newline_and_is_strict() {
        let (_d, r) = renderer(&[
            ("a.j2", "name = {{ cluster.name }}\n"),
            ("b.j2", "line one\nport = {{ cluster.port }}\n"),
        ]);
        let ctx = context! { cluster => context! { name => "demo" } };
        assert_eq!(r.render_template("a.j2", &ctx).unwrap(), "name = demo\n");
        let err = r.render_template("b.j2", &ctx).unwrap_err();
        assert_eq!(err.where_, "templates/b.j2:2");
        assert_eq!(err.message, "`cluster.port` is undefined");
    }

    #[test]
    fn missing_template_and_inline_strings() {
        let (_d, r) = renderer(&[]);
        let ctx = context! { host => context! { name => "cp1" } };
        let err = r.render_template("nope.j2", &ctx).unwrap_err();
        assert_eq!(err.message, "no such template");
        assert_eq!(
            r.render_str("x", "/etc/{{ host.name }}", &ctx).unwrap(),
            "/etc/cp1"
        );
        assert_eq!(r.render_str("x", "plain", &ctx).unwrap(), "plain");
        let err = r
            .render_str("roles/x/role.yaml:3:5", "{{ host.nmae }}", &ctx)
            .unwrap_err();
        assert_eq!(err.where_, "roles/x/role.yaml:3:5");
        assert_eq!(err.message, "`host.nmae` is undefined");
    }
}
