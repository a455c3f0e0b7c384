//! The OIP path parser: the canonical REST forms
//! (`/v2/models/{name}[/versions/{version}][/infer|/ready|/config]`) and the OIP gRPC methods,
//! and nothing a proxy or server might read differently: percent-encoding, `\`, `;` parameters,
//! dot segments, empty segments (`//`, trailing `/`), non-ASCII (look-alike) names, and a
//! non-canonical case of a keyword.

use super::{Action, GRPC_SERVICE, MAX_MODEL_NAME, MAX_MODEL_VERSION, ModelRef};

/// Longest accepted path: OIP paths are short; anything longer is not one.
pub const MAX_PATH_BYTES: usize = 2048;

/// What the path addresses, before any gRPC body is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A configured public path: no credentials needed.
    Public,
    /// An OIP REST model path.
    Model(ModelRef),
    /// An OIP gRPC method that names its model in the message.
    GrpcModel(Action),
    /// `GET /v1/models`: the caller's model catalog ([`crate::catalog`]).
    Catalog,
    /// Well-formed but not exposed: denied by default.
    Other,
}

/// Why a path was rejected. All map to [`crate::decision::ReasonCode::InvalidPath`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path is empty or does not start with `/`.
    #[error("path must be absolute")]
    NotAbsolute,
    /// Over [`MAX_PATH_BYTES`].
    #[error("path longer than {MAX_PATH_BYTES} bytes")]
    TooLong,
    /// `%` anywhere: encoded `/`, `\` or anything else could be decoded differently upstream.
    #[error("percent-encoded characters are not accepted in the path")]
    PercentEncoded,
    /// A `\`, which some servers treat as `/`.
    #[error("backslash in path")]
    Backslash,
    /// A `;` path parameter.
    #[error("';' path parameters are not accepted")]
    Parameter,
    /// A `.` or `..` segment.
    #[error("dot segments are not accepted")]
    DotSegment,
    /// `//` or a trailing `/`.
    #[error("empty path segment ('//' or trailing '/')")]
    EmptySegment,
    /// A byte outside `[A-Za-z0-9._-/]` (non-ASCII look-alikes included).
    #[error("character outside [A-Za-z0-9._-/] in path")]
    InvalidCharacter,
    /// A keyword (`v2`, `models`, `versions`, an action) in a non-canonical case.
    #[error("non-canonical case of '{0}'")]
    NonCanonicalCase(&'static str),
    /// A model name or version outside the accepted length.
    #[error("model name or version too long")]
    NameTooLong,
}

/// The catalog path (exact; Envoy routes only this spelling to authz's catalog answer).
pub const CATALOG_PATH: &str = "/v1/models";

/// Parses the request path (with or without its query string) into a [`Route`].
///
/// `public_paths` are exact paths (no query) served without credentials.
///
/// # Errors
/// [`PathError`] for any ambiguous or non-canonical form.
pub fn parse_path(path: &str, public_paths: &[String]) -> Result<Route, PathError> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    check_characters(path)?;
    if path == "/" {
        return Ok(Route::Other);
    }
    let segs: Vec<&str> = path[1..].split('/').collect();
    for s in &segs {
        if s.is_empty() {
            return Err(PathError::EmptySegment);
        }
        if *s == "." || *s == ".." {
            return Err(PathError::DotSegment);
        }
    }
    if public_paths.iter().any(|p| p == path) {
        return Ok(Route::Public);
    }
    if path == CATALOG_PATH {
        return Ok(Route::Catalog);
    }
    if keyword(segs[0], GRPC_SERVICE)? {
        return Ok(grpc_route(&segs));
    }
    rest_route(&segs)
}

/// A path (without its query) that is short enough, absolute, and made only of the characters a
/// canonical OIP path uses.
fn check_characters(path: &str) -> Result<(), PathError> {
    if path.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong);
    }
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    for b in path.bytes() {
        match b {
            b'%' => return Err(PathError::PercentEncoded),
            b'\\' => return Err(PathError::Backslash),
            b';' => return Err(PathError::Parameter),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' | b'/' => {}
            _ => return Err(PathError::InvalidCharacter),
        }
    }
    Ok(())
}

/// `/inference.GRPCInferenceService/<method>`: the model-scoped methods, whose model is read from
/// the message.
fn grpc_route(segs: &[&str]) -> Route {
    match segs {
        [_, "ModelInfer"] => Route::GrpcModel(Action::Infer),
        [_, "ModelReady"] => Route::GrpcModel(Action::Ready),
        [_, "ModelMetadata"] => Route::GrpcModel(Action::Metadata),
        [_, "ModelConfig"] => Route::GrpcModel(Action::Config),
        // An empty name (all models) is rejected when the message is read.
        [_, "ModelStatistics"] => Route::GrpcModel(Action::Statistics),
        _ => Route::Other,
    }
}

/// `/v2/models/{name}[/versions/{version}][/{action}]`; anything else is [`Route::Other`].
fn rest_route(segs: &[&str]) -> Result<Route, PathError> {
    if !keyword(segs[0], "v2")? || segs.len() < 3 || !keyword(segs[1], "models")? {
        return Ok(Route::Other);
    }
    let name = segs[2];
    let rest = &segs[3..];
    let (version, rest) = match rest {
        [v, tail @ ..] if keyword(v, "versions")? => match tail {
            [version, tail @ ..] => (Some(*version), tail),
            [] => return Ok(Route::Other),
        },
        _ => (None, rest),
    };
    let action = match rest {
        [] => Action::Metadata,
        [a] => match rest_action(a)? {
            Some(act) => act,
            None => return Ok(Route::Other),
        },
        _ => return Ok(Route::Other),
    };
    if name.len() > MAX_MODEL_NAME || version.is_some_and(|v| v.len() > MAX_MODEL_VERSION) {
        return Err(PathError::NameTooLong);
    }
    Ok(Route::Model(ModelRef {
        name: name.to_owned(),
        version: version.map(str::to_owned),
        action,
    }))
}

/// The action a REST path's last segment names (`infer`, `ready`, `config`, `stats`), if any.
fn rest_action(segment: &str) -> Result<Option<Action>, PathError> {
    let mut found = None;
    for act in [
        Action::Infer,
        Action::Ready,
        Action::Config,
        Action::Statistics,
    ] {
        let kw = act.rest_suffix().unwrap_or_default();
        if keyword(segment, kw)? {
            found = Some(act);
        }
    }
    Ok(found)
}

/// `Ok(true)` when `seg` is exactly `kw`; an error when it matches only case-insensitively (a
/// server that folds case would route it where we did not look).
fn keyword(seg: &str, kw: &'static str) -> Result<bool, PathError> {
    if seg == kw {
        Ok(true)
    } else if seg.eq_ignore_ascii_case(kw) {
        Err(PathError::NonCanonicalCase(kw))
    } else {
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public() -> Vec<String> {
        vec![
            "/v2".into(),
            "/v2/health/live".into(),
            "/v2/health/ready".into(),
        ]
    }

    fn model(name: &str, version: Option<&str>, action: Action) -> Route {
        Route::Model(ModelRef {
            name: name.into(),
            version: version.map(Into::into),
            action,
        })
    }

    #[test]
    fn canonical_paths_parse() {
        let p = public();
        assert_eq!(
            parse_path("/v2/models/m/infer", &p),
            Ok(model("m", None, Action::Infer))
        );
        assert_eq!(
            parse_path("/v2/models/m.x_y-1/versions/3/ready?x=1", &p),
            Ok(model("m.x_y-1", Some("3"), Action::Ready))
        );
        assert_eq!(
            parse_path("/v2/models/m", &p),
            Ok(model("m", None, Action::Metadata))
        );
        assert_eq!(
            parse_path("/v2/models/m/versions/2", &p),
            Ok(model("m", Some("2"), Action::Metadata))
        );
        assert_eq!(
            parse_path("/v2/models/m/config", &p),
            Ok(model("m", None, Action::Config))
        );
        assert_eq!(parse_path("/v2/health/live", &p), Ok(Route::Public));
        assert_eq!(parse_path("/v1/models", &p), Ok(Route::Catalog));
        assert_eq!(parse_path("/v1/models?x=1", &p), Ok(Route::Catalog));
        assert_eq!(parse_path("/v1/models/x", &p), Ok(Route::Other));
        assert_eq!(parse_path("/v2", &p), Ok(Route::Public));
        assert_eq!(parse_path("/v2/repository/index", &p), Ok(Route::Other));
        assert_eq!(
            parse_path("/v2/models/m/stats", &p),
            Ok(model("m", None, Action::Statistics))
        );
        assert_eq!(
            parse_path("/v2/models/m/trace/setting", &p),
            Ok(Route::Other)
        );
        assert_eq!(parse_path("/", &p), Ok(Route::Other));
        assert_eq!(
            parse_path("/inference.GRPCInferenceService/ModelInfer", &p),
            Ok(Route::GrpcModel(Action::Infer))
        );
        assert_eq!(
            parse_path("/inference.GRPCInferenceService/RepositoryModelLoad", &p),
            Ok(Route::Other)
        );
    }

    #[test]
    fn ambiguous_paths_are_rejected() {
        let p = public();
        let cases: &[(&str, PathError)] = &[
            ("/v2/models/a%2Fb/infer", PathError::PercentEncoded),
            ("/v2/models/a%2fb/infer", PathError::PercentEncoded),
            ("/v2/models/a%5Cb/infer", PathError::PercentEncoded),
            ("/v2/models/a\\b/infer", PathError::Backslash),
            ("/v2/models/../models/m/infer", PathError::DotSegment),
            ("/v2/models/./m/infer", PathError::DotSegment),
            ("/v2//models/m/infer", PathError::EmptySegment),
            ("/v2/models/m/infer/", PathError::EmptySegment),
            ("/v2/models/m;v=1/infer", PathError::Parameter),
            ("/V2/models/m/infer", PathError::NonCanonicalCase("v2")),
            ("/v2/Models/m/infer", PathError::NonCanonicalCase("models")),
            ("/v2/models/m/INFER", PathError::NonCanonicalCase("infer")),
            (
                "/v2/models/m/Versions/1/infer",
                PathError::NonCanonicalCase("versions"),
            ),
            ("/v2/models/mіssion/infer", PathError::InvalidCharacter),
            ("/v2/models/m n/infer", PathError::InvalidCharacter),
            ("v2/models/m/infer", PathError::NotAbsolute),
            ("", PathError::NotAbsolute),
        ];
        for (path, err) in cases {
            assert_eq!(parse_path(path, &p).as_ref(), Err(err), "{path}");
        }
        let long = format!("/v2/models/{}/infer", "a".repeat(129));
        assert_eq!(parse_path(&long, &p), Err(PathError::NameTooLong));
    }
}
