//! `HistoryService` and `ErasureService`: the gRPC shells of
//! `crate::records::history` and `crate::records::erasure`.

use tonic::{Request, Response, Status};

use super::{Api, Ctx};
use crate::proto::erasure_service_server::ErasureService;
use crate::proto::history_service_server::HistoryService;
use crate::proto::{
    GetRecordAtRequest, ListRecordHistoryRequest, ListRecordHistoryResponse, PurgeRecordRequest,
    PurgeRecordResponse,
};
use crate::records::history::History;

impl Api {
    fn history(&self) -> History {
        History::new(self.store.db().clone(), self.store.pages().clone())
    }
}

#[tonic::async_trait]
impl HistoryService for Api {
    async fn list_record_history(
        &self,
        request: Request<ListRecordHistoryRequest>,
    ) -> Result<Response<ListRecordHistoryResponse>, Status> {
        let ctx = Ctx::of(&request)?;
        let r = request.into_inner();
        ctx.require_collection(&r.collection)?;
        let result = self
            .history()
            .list(
                &ctx.caller,
                &r.collection,
                &r.id,
                r.page_size,
                &r.page_token,
                &r.fields,
            )
            .await
            .map(|(entries, next_page_token)| ListRecordHistoryResponse {
                entries,
                next_page_token,
            });
        ctx.reply(result)
    }

    async fn get_record_at(
        &self,
        request: Request<GetRecordAtRequest>,
    ) -> Result<Response<prost_types::Struct>, Status> {
        let ctx = Ctx::of(&request)?;
        let r = request.into_inner();
        ctx.require_collection(&r.collection)?;
        ctx.reply(
            self.history()
                .at(&ctx.caller, &r.collection, &r.id, r.time)
                .await,
        )
    }
}

#[tonic::async_trait]
impl ErasureService for Api {
    async fn purge_record(
        &self,
        request: Request<PurgeRecordRequest>,
    ) -> Result<Response<PurgeRecordResponse>, Status> {
        let ctx = Ctx::of(&request)?;
        let r = request.into_inner();
        let result = self
            .store
            .purge(&ctx.caller, &r.collection, &r.id, r.cascade)
            .await
            .map(|erased| PurgeRecordResponse {
                erased: erased.into_iter().collect(),
            });
        ctx.reply(result)
    }
}
