//! Answers the gateway writes itself, in the shape the caller's client
//! reads: Anthropic's and OpenAI's JSON error bodies, or plain text for the
//! HTTPS proxy, so the agent's CLI shows the gateway's reason.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};

/// Response bodies: the upstream's streamed through, or the gateway's own.
pub(crate) type ResBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;
/// Errors inside response bodies.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The error body format a caller understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// `{"type":"error","error":{"type":..,"message":..}}`
    Anthropic,
    /// `{"error":{"message":..,"type":..,"code":..}}`
    Openai,
    /// A line of text.
    Plain,
}

/// An error answer saying `message`, prefixed so the agent sees who refused.
pub(crate) fn error(shape: Shape, status: StatusCode, message: &str) -> Response<ResBody> {
    let text = format!("nuketown gateway: {message}");
    let kind = match status.as_u16() {
        400 | 405 => "invalid_request_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        _ => "api_error",
    };
    let (content_type, body) = match shape {
        Shape::Anthropic => (
            "application/json",
            serde_json::json!({"type": "error", "error": {"type": kind, "message": text}})
                .to_string(),
        ),
        Shape::Openai => {
            let code = match status.as_u16() {
                403 => "permission_denied",
                429 => "rate_limit_exceeded",
                413 => "request_too_large",
                404 => "not_found",
                400 | 405 => "invalid_request",
                _ => "gateway_error",
            };
            (
                "application/json",
                serde_json::json!({"error": {"message": text, "type": kind, "code": code}})
                    .to_string(),
            )
        }
        Shape::Plain => ("text/plain; charset=utf-8", format!("{text}\n")),
    };
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    // The town's verdict (a limit, a pause, a refusal) does not change by
    // asking again: the providers' SDKs read this and show the error at
    // once instead of retrying it with back-off. An upstream that could
    // not be reached (502) may be retried.
    if status != StatusCode::BAD_GATEWAY {
        response
            .headers_mut()
            .insert("x-should-retry", http::HeaderValue::from_static("false"));
    }
    response
}

/// A body of known bytes.
pub(crate) fn full(body: impl Into<Bytes>) -> ResBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty 200, the answer to an accepted CONNECT.
pub(crate) fn connected() -> Response<ResBody> {
    Response::new(full(Bytes::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shapes() {
        let r = error(Shape::Anthropic, StatusCode::TOO_MANY_REQUESTS, "slow down");
        let body = r.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert_eq!(v["error"]["message"], "nuketown gateway: slow down");
        let r = error(Shape::Openai, StatusCode::FORBIDDEN, "no");
        let body = r.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "permission_denied");
    }
}
