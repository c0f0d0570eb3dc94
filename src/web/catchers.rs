//! The crate's catchers, which the app mounts (`Logto::catchers()`): the crate's error
//! pages for the statuses its guards fail with, and a generic page for those statuses when
//! no guard of the crate failed.

use rocket::http::Status;
use rocket::request::Request;
use rocket::response::{self, Responder, Response};
use rocket::{catch, Catcher};

use crate::error::LogtoError;
use crate::web::bearer::recorded_bearer_failure;
use crate::web::context::recorded_failure;
use crate::web::error_page::render_for;

pub(crate) fn catchers() -> Vec<Catcher> {
    rocket::catchers![
        bad_request,
        unauthorized,
        forbidden,
        internal_error,
        bad_gateway,
        unavailable
    ]
}

/// The error a crate guard failed with in this request when it has `status`, else the
/// generic one for `status`, answered as a `LogtoError` is (page, JSON or, for a browser
/// that is not signed in, the redirect to sign-in). An API guard's failure is answered as
/// RFC 6750 JSON, whatever the client accepts.
fn answer(status: Status, request: &Request<'_>) -> Response<'static> {
    if let Some(bearer) = recorded_bearer_failure(request).filter(|e| e.status() == status) {
        return bearer.render();
    }
    let error = recorded_failure(request)
        .filter(|e| e.status() == status)
        .unwrap_or_else(|| generic(status));
    render_for(&error, request)
}

fn generic(status: Status) -> LogtoError {
    match status.code {
        400 => LogtoError::BadRequest("The request could not be understood.".into()),
        401 => LogtoError::Unauthenticated,
        403 => LogtoError::Forbidden("You are not allowed to see this page.".into()),
        502 => LogtoError::bad_gateway(
            "A service this site depends on answered with an error; try again later.",
        ),
        503 => LogtoError::unavailable("This service is unavailable right now; try again later."),
        _ => LogtoError::Config("The server could not answer this request.".into()),
    }
}

/// The crate's answer for a status, as a responder.
struct Caught(Status);

impl<'r> Responder<'r, 'static> for Caught {
    fn respond_to(self, request: &'r Request<'_>) -> response::Result<'static> {
        Ok(answer(self.0, request))
    }
}

#[catch(400)]
fn bad_request() -> Caught {
    Caught(Status::BadRequest)
}

#[catch(401)]
fn unauthorized() -> Caught {
    Caught(Status::Unauthorized)
}

#[catch(403)]
fn forbidden() -> Caught {
    Caught(Status::Forbidden)
}

#[catch(500)]
fn internal_error() -> Caught {
    Caught(Status::InternalServerError)
}

#[catch(502)]
fn bad_gateway() -> Caught {
    Caught(Status::BadGateway)
}

#[catch(503)]
fn unavailable() -> Caught {
    Caught(Status::ServiceUnavailable)
}
