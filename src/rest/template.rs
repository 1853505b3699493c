//! `google.api.http` path templates (the subset of the HttpRule grammar the
//! crm protos use, as grpc-gateway matches it): literal segments, single-
//! segment variables `{field}` / `{field.sub}` / `{field=*}`, and a trailing
//! `:verb`.

/// One segment of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// Must equal this text.
    Literal(String),
    /// Binds one path segment to the request field at this path.
    Var(Vec<String>),
}

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    /// The segments after the leading `/`.
    pub segments: Vec<Segment>,
    /// The custom verb after `:`, if any.
    pub verb: Option<String>,
}

/// A variable bound by a match: the field path and the decoded segment.
pub type Binding = (Vec<String>, String);

impl Template {
    /// Parses `/a/{b.c}/d:verb`. Multi-segment variables (`**`, `{x=a/*}`) are
    /// not used by the crm protos and are rejected.
    pub fn parse(template: &str) -> Result<Self, String> {
        let path = template
            .strip_prefix('/')
            .ok_or_else(|| format!("{template}: must start with /"))?;
        let (path, verb) = match path.rfind(':') {
            Some(i) if !path[i..].contains('}') && !path[i..].contains('/') => {
                (&path[..i], Some(path[i + 1..].to_owned()))
            }
            _ => (path, None),
        };
        let segments = path
            .split('/')
            .map(|s| {
                if let Some(inner) = s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    let field = match inner.split_once('=') {
                        Some((f, "*")) => f,
                        Some(_) => {
                            return Err(format!(
                                "{template}: only single-segment variables are supported"
                            ));
                        }
                        None => inner,
                    };
                    Ok(Segment::Var(field.split('.').map(str::to_owned).collect()))
                } else if s.is_empty() || s.contains(['{', '}', '*']) {
                    Err(format!("{template}: unsupported segment {s:?}"))
                } else {
                    Ok(Segment::Literal(s.to_owned()))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { segments, verb })
    }

    /// The variables bound when `path` matches, else `None`.
    pub fn matches(&self, path: &str) -> Option<Vec<Binding>> {
        let path = path.strip_prefix('/')?;
        let path = match &self.verb {
            Some(verb) => path.strip_suffix(verb.as_str())?.strip_suffix(':')?,
            None => path,
        };
        let parts: Vec<&str> = path.split('/').collect();
        if parts.len() != self.segments.len() {
            return None;
        }
        let mut bound = Vec::new();
        for (segment, part) in self.segments.iter().zip(parts) {
            match segment {
                Segment::Literal(l) if l == part => {}
                Segment::Literal(_) => return None,
                // Empty, or the `:verb` of an empty one (`/deals/:undelete`):
                // no value, so no match (404, as grpc-gateway answers).
                Segment::Var(_) if part.is_empty() || part.starts_with(':') => return None,
                Segment::Var(field) => {
                    let value = percent_decode(part)?;
                    bound.push((field.clone(), value));
                }
            }
        }
        Some(bound)
    }

    /// The first field name of every variable (those fields are bound by
    /// the path and cannot come from the query).
    pub fn bound_fields(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Var(f) => f.first().map(String::as_str),
            Segment::Literal(_) => None,
        })
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_matches() {
        let t = Template::parse("/api/v1/crm/accounts/{account.id}").unwrap();
        assert_eq!(
            t.matches("/api/v1/crm/accounts/acc_1"),
            Some(vec![(vec!["account".into(), "id".into()], "acc_1".into())])
        );
        assert_eq!(t.matches("/api/v1/crm/accounts"), None);
        assert_eq!(t.matches("/api/v1/crm/accounts/"), None);
        assert_eq!(t.matches("/api/v1/crm/accounts/a/b"), None);
        assert_eq!(t.bound_fields().collect::<Vec<_>>(), vec!["account"]);
    }

    #[test]
    fn verbs() {
        let t = Template::parse("/api/v1/crm/line-items/{id}:undelete").unwrap();
        assert_eq!(t.verb.as_deref(), Some("undelete"));
        assert_eq!(
            t.matches("/api/v1/crm/line-items/li_1:undelete"),
            Some(vec![(vec!["id".into()], "li_1".into())])
        );
        assert_eq!(t.matches("/api/v1/crm/line-items/li_1"), None);
        let plain = Template::parse("/api/v1/crm/line-items/{id}").unwrap();
        assert_eq!(plain.verb, None);
        // A verb after an empty id binds nothing, in either template.
        assert!(t.matches("/api/v1/crm/line-items/:undelete").is_none());
        assert!(plain.matches("/api/v1/crm/line-items/:undelete").is_none());
    }

    #[test]
    fn decodes_segments() {
        let t = Template::parse("/x/{id=*}").unwrap();
        assert_eq!(
            t.matches("/x/a%20b"),
            Some(vec![(vec!["id".into()], "a b".into())])
        );
        assert_eq!(t.matches("/x/%zz"), None);
        assert!(Template::parse("/x/{name=a/*}").is_err());
        assert!(Template::parse("x").is_err());
    }
}
