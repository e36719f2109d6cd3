//! The front of the credentials API, a tower service with its own future around the router:
//! the overload cap, the guard (limits, `X-Forwarded-For`, the caller's identity), the request
//! timeout, metrics by the route the router matched, and the security headers; and plain reads
//! answered without the router.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower::util::Oneshot;
use tower::{Service, ServiceExt};

use super::auth::{self, Caller};
use super::credentials;
use super::error::ApiError;
use super::hold::Hold;
use super::observe::finish;
use super::route::{CREDENTIALS_ROUTE, MatchedRoute, Refused};
use super::state::ApiState;
use crate::clients::Client;

/// Everything in front of the credentials API's handlers, in order: metrics, the request log
/// and the security headers (on the way out); the overload cap (past `max_concurrent_requests`
/// in progress, 503 `overloaded` at once, never a queue); the guard; and the request timeout
/// (504 `request_timeout`), whose timer is only armed once the answer has to wait.
///
/// A plain read (see [`credentials::plain_read`]) of an admitted caller, nearly every request in
/// practice, is answered at once by [`credentials::read_now`] when the cache has the
/// credentials (taking no place under the cap, while one is free), else by
/// [`credentials::read`], and labelled by its route's constant. Every other
/// request goes through the router, refused ones too: the router's layer ([`super::route`])
/// answers those with their refusal, so each request is labelled by the route it matched.
#[derive(Debug, Clone)]
pub struct Front {
    state: Arc<ApiState>,
    router: Router,
}

impl Front {
    pub(crate) fn new(state: Arc<ApiState>, router: Router) -> Self {
        Self { state, router }
    }

    /// Answers one request: the work of both service impls below.
    fn handle<B>(&self, request: axum::http::Request<B>) -> FrontFuture
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let started = Instant::now();
        // The body limit counts the bytes received, however the body is framed (a declared
        // `Content-Length` over it is refused before any is read, by the guard).
        let limit = usize::try_from(self.state.limits.max_body_bytes).unwrap_or(usize::MAX);
        let request = request.map(|body| Body::new(http_body_util::Limited::new(body, limit)));
        // A request answered at once takes no place under the cap (and is not counted in
        // flight): that would be four writes to lines every worker thread shares, for a place
        // held for no time at all. It is refused, though, when every place is taken.
        let mut caller = None;
        if self.state.in_progress.load(Ordering::Acquire)
            < self.state.limits.max_concurrent_requests
        {
            let admitted = auth::admit(&self.state, &request);
            if let Ok(client) = admitted
                && let Some(response) = self.answer_at_once(&request, client, started)
            {
                return FrontFuture::answered(response);
            }
            caller = Some(admitted);
        }
        let admission = AdmissionGuard::enter(&self.state, request.method().clone(), started);
        let caller = if admission.admitted {
            caller
                .unwrap_or_else(|| auth::admit(&self.state, &request))
                .map(Arc::clone)
        } else {
            Err(ApiError::Overloaded)
        };
        let (answer, route) = match caller {
            Ok(client) => self.answer(request, client),
            Err(refusal) => self.route(request, Refused(refusal)),
        };
        FrontFuture {
            answer,
            route,
            timer: None,
            admission: Some(admission),
        }
    }

    /// The answer to a plain read of `client` that the cache has, counted and finished.
    fn answer_at_once(
        &self,
        request: &Request,
        client: &Client,
        started: Instant,
    ) -> Option<Response> {
        let (db, format) = credentials::plain_read(request.method(), request.uri())?;
        let answer = credentials::read_now(&self.state, client, db, format, request.headers())?;
        Some(finish(
            &self.state.metrics,
            Some(CREDENTIALS_ROUTE),
            request.method(),
            started,
            answer.into_response(),
        ))
    }

    /// The answer to an admitted request of `client` that has to wait, and the route it is
    /// labelled by.
    fn answer(&self, request: Request, client: Arc<Client>) -> (Answer, RouteLabel) {
        let Some(_) = credentials::plain_read(request.method(), request.uri()) else {
            return self.route(request, Caller(client));
        };
        let route = RouteLabel::Fixed(CREDENTIALS_ROUTE);
        // Not in the cache (or there was no room to answer at once): wait for the source.
        let state = Arc::clone(&self.state);
        let (parts, _) = request.into_parts();
        let future = Box::pin(async move {
            let (db, format) =
                credentials::plain_read(&parts.method, &parts.uri).expect("checked above");
            credentials::read(&state, &client, db, Ok(format), &parts.headers)
                .await
                .into_response()
        });
        (Answer::FromSource { future }, route)
    }

    /// Sends `request` through the router with `extension` (the caller, or a refusal); the
    /// router tells the route it matched, and the handler whether it holds the request.
    fn route<T>(&self, mut request: Request, extension: T) -> (Answer, RouteLabel)
    where
        T: Clone + Send + Sync + 'static,
    {
        let (matched, hold) = (MatchedRoute::default(), Hold::default());
        request.extensions_mut().insert(extension);
        request.extensions_mut().insert(matched.clone());
        request.extensions_mut().insert(hold.clone());
        let future = self.router.clone().oneshot(request);
        (Answer::Routed { future }, RouteLabel::Routed(matched, hold))
    }
}

/// The route template a request is counted under.
enum RouteLabel {
    /// The fast path's own route.
    Fixed(&'static str),
    /// What the router matched, once it has, and whether the handler holds the request.
    Routed(MatchedRoute, Hold),
}

impl RouteLabel {
    fn template(&self) -> Option<&str> {
        match self {
            Self::Fixed(template) => Some(template),
            Self::Routed(matched, _) => matched.template(),
        }
    }

    fn is_held(&self) -> bool {
        matches!(self, Self::Routed(_, hold) if hold.is_held())
    }
}

/// As a tower service, for `oneshot` in tests and for tower middleware.
impl<B> Service<axum::http::Request<B>> for Front
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = FrontFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        self.handle(request)
    }
}

/// As a hyper service, which a connection calls by reference: unlike a tower service behind
/// hyper-util's adapter, `Front` is not cloned for every request.
impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for Front {
    type Response = Response;
    type Error = Infallible;
    type Future = FrontFuture;

    fn call(&self, request: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        self.handle(request)
    }
}

pin_project! {
    #[project = AnswerProj]
    enum Answer {
        // A plain read the cache answered at once, counted and finished.
        Finished { response: Option<Response> },
        // A plain read waiting for the source.
        FromSource { future: Pin<Box<dyn Future<Output = Response> + Send>> },
        // Everything else, refusals included: the router's answer.
        Routed { #[pin] future: Oneshot<Router, Request> },
    }
}

pin_project! {
    /// The response future of [`Front`].
    pub struct FrontFuture {
        #[pin]
        answer: Answer,
        route: RouteLabel,
        // Armed the first time the answer is not ready.
        timer: Option<Pin<Box<Sleep>>>,
        admission: Option<AdmissionGuard>,
    }
}

impl FrontFuture {
    /// The future of a request answered at once, counted and finished already.
    fn answered(response: Response) -> Self {
        Self {
            answer: Answer::Finished {
                response: Some(response),
            },
            route: RouteLabel::Fixed(CREDENTIALS_ROUTE),
            timer: None,
            admission: None,
        }
    }
}

/// A request counted as in flight and, when `admitted`, holding one of the
/// `max_concurrent_requests` places, until its response is finished or it is dropped (the
/// client went away); and what the response is counted with.
struct AdmissionGuard {
    state: Arc<ApiState>,
    admitted: bool,
    method: Method,
    started: Instant,
}

impl AdmissionGuard {
    fn enter(state: &Arc<ApiState>, method: Method, started: Instant) -> Self {
        state.metrics.http_in_flight.inc();
        let max = state.limits.max_concurrent_requests;
        let admitted = state
            .in_progress
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        Self {
            state: Arc::clone(state),
            admitted,
            method,
            started,
        }
    }
}

impl AdmissionGuard {
    /// Gives back the request's `max_concurrent_requests` place: it is held, and counted
    /// against `max_waiters` instead.
    fn release_place(&mut self) {
        if std::mem::take(&mut self.admitted) {
            self.state.in_progress.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for AdmissionGuard {
    fn drop(&mut self) {
        if self.admitted {
            self.state.in_progress.fetch_sub(1, Ordering::AcqRel);
        }
        self.state.metrics.http_in_flight.dec();
    }
}

impl Future for FrontFuture {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let ready = match this.answer.project() {
            AnswerProj::Finished { response } => {
                return Poll::Ready(Ok(response.take().expect("polled after completion")));
            }
            AnswerProj::FromSource { future } => future.as_mut().poll(cx).map(Some),
            AnswerProj::Routed { future } => future.poll(cx).map(|result| match result {
                Ok(response) => Some(response),
                Err(never) => match never {},
            }),
        };
        let response = match ready {
            Poll::Ready(response) => response.expect("polled after completion"),
            Poll::Pending if this.route.is_held() => {
                // A held request waits as long as it asks (within `max_wait`), off the cap.
                let admission = this.admission.as_mut().expect("polled after completion");
                admission.release_place();
                return Poll::Pending;
            }
            Poll::Pending => {
                let admission = this.admission.as_ref().expect("polled after completion");
                let deadline = admission.started + admission.state.limits.request_timeout;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
                ready!(timer.as_mut().poll(cx));
                ApiError::RequestTimeout.into_response()
            }
        };
        let admission = this.admission.take().expect("polled after completion");
        Poll::Ready(Ok(finish(
            &admission.state.metrics,
            this.route.template(),
            &admission.method,
            admission.started,
            response,
        )))
    }
}
