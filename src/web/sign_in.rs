//! [`SignIn`] as a Rocket responder: it sends the browser (303) to this app's
//! `/logto/sign-in` with the options the route chose.

use rocket::http::{Header, Status};
use rocket::request::Request;
use rocket::response::{self, Responder, Response};

use crate::sign_in_options::SignIn;

impl<'r> Responder<'r, 'static> for SignIn {
    fn respond_to(self, request: &'r Request<'_>) -> response::Result<'static> {
        let Some(state) = request.rocket().state::<crate::web::state::LogtoState>() else {
            log::error!("rocket_logto: `SignIn` is answered, but the Logto fairing is not attached: add `.attach(Logto::fairing())`.");
            return Err(Status::InternalServerError);
        };
        let location = self.href(&state.config.routes_base());
        Response::build()
            .status(Status::SeeOther)
            .header(Header::new("Location", location))
            .header(Header::new("Cache-Control", "no-store"))
            .ok()
    }
}
