//! `ChangeService`: the change feed's gRPC shell (see `crate::changes`).

use std::pin::Pin;

use futures_util::Stream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{Api, Ctx};
use crate::changes::feed::Query;
use crate::proto::change_service_server::ChangeService;
use crate::proto::{
    ListChangesRequest, ListChangesResponse, WatchChangesRequest, WatchChangesResponse,
};

/// Messages queued for a watch before it waits for the client to read
/// (HTTP/2 flow control does the rest).
const WATCH_BUFFER: usize = 16;

#[tonic::async_trait]
impl ChangeService for Api {
    async fn list_changes(
        &self,
        request: Request<ListChangesRequest>,
    ) -> Result<Response<ListChangesResponse>, Status> {
        let ctx = Ctx::of(&request)?;
        let r = request.into_inner();
        let result = async {
            let q = Query::new(
                r.after_sequence,
                r.page_size,
                &r.resource_types,
                &r.operations,
            )?;
            self.feed.list(&ctx.caller, &q).await
        }
        .await;
        ctx.reply(result)
    }

    type WatchChangesStream =
        Pin<Box<dyn Stream<Item = Result<WatchChangesResponse, Status>> + Send + 'static>>;

    async fn watch_changes(
        &self,
        request: Request<WatchChangesRequest>,
    ) -> Result<Response<Self::WatchChangesStream>, Status> {
        let ctx = Ctx::of(&request)?;
        let r = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_BUFFER);
        let started = async {
            let q = Query::new(r.after_sequence, 0, &r.resource_types, &r.operations)?;
            self.feed.watch(&ctx.caller, q, tx).await
        }
        .await;
        if let Err(e) = started {
            return Err(ctx.status(e));
        }
        let request_id = ctx.request_id.clone();
        let sent = self.feed.sent().clone();
        // Taken from the queue only when the transport asks for more, i.e.
        // as HTTP/2 flow control lets the client's reading through.
        let stream = ReceiverStream::new(rx).map(move |item| {
            sent.inc();
            item.map_err(|e| e.into_status(&request_id))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
