//! `WebhookService`: the gRPC shell of `crate::webhooks`.

use tonic::{Request, Response, Status};

use super::{Api, Ctx};
use crate::error::invalid;
use crate::proto::webhook_service_server::WebhookService;
use crate::proto::{
    CreateWebhookRequest, DeleteWebhookRequest, DeleteWebhookResponse, GetWebhookRequest,
    ListWebhookDeliveriesRequest, ListWebhookDeliveriesResponse, ListWebhooksRequest,
    ListWebhooksResponse, RedeliverWebhookRequest, RedeliverWebhookResponse, UpdateWebhookRequest,
    Webhook,
};

#[tonic::async_trait]
impl WebhookService for Api {
    async fn create_webhook(
        &self,
        request: Request<CreateWebhookRequest>,
    ) -> Result<Response<Webhook>, Status> {
        let ctx = Ctx::of(&request)?;
        let r = request.into_inner();
        let result = match r.webhook {
            Some(w) => self.webhooks.create(&ctx.caller, w).await,
            None => Err(invalid("webhook", "is required")),
        };
        ctx.reply(result)
    }

    async fn get_webhook(
        &self,
        request: Request<GetWebhookRequest>,
    ) -> Result<Response<Webhook>, Status> {
        let ctx = Ctx::of(&request)?;
        let r = request.into_inner();
        ctx.reply(self.webhooks.get(&ctx.caller, &r.id).await)
    }

    async fn list_webhooks(
        &self,
        request: Request<ListWebhooksRequest>,
    ) -> Result<Response<ListWebhooksResponse>, Status> {
        let ctx = Ctx::of(&request)?;
        let r = request.into_inner();
        let result = self
            .webhooks
            .list(&ctx.caller, r.page_size, &r.page_token)
            .await
            .map(|(webhooks, next_page_token)| ListWebhooksResponse {
                webhooks,
                next_page_token,
            });
        ctx.reply(result)
    }

    async fn update_webhook(
        &self,
        request: Request<UpdateWebhookRequest>,
    ) -> Result<Response<Webhook>, Status> {
        let ctx = Ctx::of(&request)?;
        let r = request.into_inner();
        let mask = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let result = match r.webhook {
            Some(w) => self.webhooks.update(&ctx.caller, w, &mask).await,
            None => Err(invalid("webhook", "is required")),
        };
        ctx.reply(result)
    }

    async fn delete_webhook(
        &self,
        request: Request<DeleteWebhookRequest>,
    ) -> Result<Response<DeleteWebhookResponse>, Status> {
        let ctx = Ctx::of(&request)?;
        let r = request.into_inner();
        let result = self
            .webhooks
            .delete(&ctx.caller, &r.id)
            .await
            .map(|()| DeleteWebhookResponse {});
        ctx.reply(result)
    }

    async fn list_webhook_deliveries(
        &self,
        request: Request<ListWebhookDeliveriesRequest>,
    ) -> Result<Response<ListWebhookDeliveriesResponse>, Status> {
        let ctx = Ctx::of(&request)?;
        let r = request.into_inner();
        ctx.reply(
            self.webhooks
                .deliveries(&ctx.caller, &r.id, r.page_size, &r.page_token)
                .await,
        )
    }

    async fn redeliver_webhook(
        &self,
        request: Request<RedeliverWebhookRequest>,
    ) -> Result<Response<RedeliverWebhookResponse>, Status> {
        let ctx = Ctx::of(&request)?;
        let r = request.into_inner();
        ctx.reply(
            self.webhooks
                .redeliver(&ctx.caller, &r.id, r.after_sequence)
                .await,
        )
    }
}
