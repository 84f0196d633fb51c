//! A small blocking HTTP client for step bodies, over `wasi:http`.
//!
//! The host lets a guest reach the network only inside a step body, so that a
//! request runs once and its result is journaled; called anywhere else, these
//! functions return an error that names the rule.
//!
//! ```ignore
//! let user: User = step.run("get-user", || http::get(&url)?.json())?;
//! ```

use crate::Error;
use serde::Serialize;
use serde::de::DeserializeOwned;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use wasip2::io::streams::StreamError;

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code, e.g. 200.
    pub status: u16,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The body as UTF-8 text.
    pub fn text(&self) -> Result<String, Error> {
        String::from_utf8(self.body.clone()).map_err(|_| {
            Error::new(format!(
                "the HTTP {} response body is not UTF-8",
                self.status
            ))
        })
    }

    /// The body as JSON in a type of the caller's choosing.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Error::new(format!(
                "the HTTP {} response body is not the expected JSON: {e}",
                self.status
            ))
        })
    }

    /// Turns a 4xx or 5xx status into an error (retriable: the server may
    /// recover), so that `?` retries the step.
    pub fn error_for_status(self) -> Result<Self, Error> {
        if self.status >= 400 {
            let body = String::from_utf8_lossy(&self.body);
            return Err(Error::new(format!("HTTP {}: {}", self.status, body.trim())));
        }
        Ok(self)
    }
}

/// A request to build and send.
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    url: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Request {
    /// A request with this method (`GET`, `POST`, ...) to an `http://` or
    /// `https://` URL.
    pub fn new(method: &str, url: impl Into<String>) -> Self {
        let method = match method.to_ascii_uppercase().as_str() {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "CONNECT" => Method::Connect,
            "OPTIONS" => Method::Options,
            "TRACE" => Method::Trace,
            "PATCH" => Method::Patch,
            other => Method::Other(other.to_string()),
        };
        Request {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.as_ref().to_vec()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets a JSON body and its content type.
    pub fn json(self, value: &impl Serialize) -> Result<Self, Error> {
        let body = serde_json::to_vec(value)
            .map_err(|e| Error::non_retriable(format!("the request body is not JSON: {e}")))?;
        Ok(self.header("content-type", "application/json").body(body))
    }

    /// Sends the request and reads the whole response.
    pub fn send(self) -> Result<Response, Error> {
        let failed = |what: &str, code: Option<ErrorCode>| {
            let detail = match code {
                Some(ErrorCode::InternalError(Some(message))) => message,
                Some(code) => format!("{code:?}"),
                None => "refused by the host".into(),
            };
            Error::new(format!(
                "HTTP request to {} failed ({what}): {detail}",
                self.url
            ))
        };
        let target = Target::parse(&self.url)?;
        let headers = Fields::from_list(&self.headers)
            .map_err(|e| Error::non_retriable(format!("invalid request header: {e:?}")))?;
        let request = OutgoingRequest::new(headers);
        let path = target.path_with_query.as_str();
        let set = request.set_method(&self.method).is_ok()
            && request.set_scheme(Some(&target.scheme)).is_ok()
            && request.set_authority(Some(&target.authority)).is_ok()
            && request.set_path_with_query(Some(path)).is_ok();
        if !set {
            return Err(Error::non_retriable(format!(
                "invalid request to {}",
                self.url
            )));
        }
        let body = request
            .body()
            .map_err(|_| failed("opening the body", None))?;
        if !self.body.is_empty() {
            let stream = body.write().map_err(|_| failed("writing the body", None))?;
            for chunk in self.body.chunks(4096) {
                stream
                    .blocking_write_and_flush(chunk)
                    .map_err(|_| failed("writing the body", None))?;
            }
        }
        let pending =
            outgoing_handler::handle(request, None).map_err(|e| failed("sending", Some(e)))?;
        OutgoingBody::finish(body, None).map_err(|e| failed("finishing the body", Some(e)))?;
        pending.subscribe().block();
        let response = match pending.get() {
            Some(Ok(Ok(response))) => response,
            Some(Ok(Err(code))) => return Err(failed("waiting for the response", Some(code))),
            _ => return Err(failed("waiting for the response", None)),
        };
        let status = response.status();
        let headers = response.headers().entries().into_iter().collect::<Vec<_>>();
        let incoming = response
            .consume()
            .map_err(|_| failed("reading the body", None))?;
        let mut bytes = Vec::new();
        {
            let stream = incoming
                .stream()
                .map_err(|_| failed("reading the body", None))?;
            loop {
                match stream.blocking_read(64 * 1024) {
                    Ok(chunk) => bytes.extend_from_slice(&chunk),
                    Err(StreamError::Closed) => break,
                    Err(StreamError::LastOperationFailed(e)) => {
                        return Err(Error::new(format!(
                            "HTTP request to {} failed while reading the body: {}",
                            self.url,
                            e.to_debug_string()
                        )));
                    }
                }
            }
        }
        drop(IncomingBody::finish(incoming));
        Ok(Response {
            status,
            headers,
            body: bytes,
        })
    }
}

/// `GET url`.
pub fn get(url: &str) -> Result<Response, Error> {
    Request::new("GET", url).send()
}

/// `POST url` with a JSON body.
pub fn post_json(url: &str, body: &impl Serialize) -> Result<Response, Error> {
    Request::new("POST", url).json(body)?.send()
}

struct Target {
    scheme: Scheme,
    authority: String,
    path_with_query: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, Error> {
        let invalid = || {
            Error::non_retriable(format!(
                "invalid URL {url:?}: expected http://host[:port]/path or https://..."
            ))
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(invalid)?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            _ => return Err(invalid()),
        };
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.is_empty() {
            return Err(invalid());
        }
        let path_with_query = match path {
            "" => "/".to_string(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_string(),
        };
        Ok(Target {
            scheme,
            authority: authority.to_string(),
            path_with_query,
        })
    }
}
