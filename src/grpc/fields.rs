//! `FieldDefinitionService`: the gRPC shell of `crate::custom`.

use tonic::{Request, Response, Status};

use super::{Api, Ctx};
use crate::error::invalid;
use crate::proto::field_definition_service_server::FieldDefinitionService;
use crate::proto::{
    CheckFieldDefinitionRequest, CheckFieldDefinitionResponse, CreateFieldDefinitionRequest,
    DeleteFieldDefinitionRequest, DeleteFieldDefinitionResponse, FieldDefinition,
    GetFieldDefinitionRequest, ListFieldDefinitionsRequest, ListFieldDefinitionsResponse,
    UpdateFieldDefinitionRequest,
};

#[tonic::async_trait]
impl FieldDefinitionService for Api {
    async fn create_field_definition(
        &self,
        request: Request<CreateFieldDefinitionRequest>,
    ) -> Result<Response<FieldDefinition>, Status> {
        let ctx = Ctx::of(&request)?;
        let r = request.into_inner();
        let result = match r.field_definition {
            Some(d) => self.fields.create(&ctx.caller, d).await,
            None => Err(invalid("field_definition", "is required")),
        };
        ctx.reply(result)
    }

    async fn get_field_definition(
        &self,
        request: Request<GetFieldDefinitionRequest>,
    ) -> Result<Response<FieldDefinition>, Status> {
        let ctx = Ctx::of(&request)?;
        let r = request.into_inner();
        ctx.reply(self.fields.get(&ctx.caller, &r.id).await)
    }

    async fn list_field_definitions(
        &self,
        request: Request<ListFieldDefinitionsRequest>,
    ) -> Result<Response<ListFieldDefinitionsResponse>, Status> {
        let ctx = Ctx::of(&request)?;
        let r = request.into_inner();
        let result = self
            .fields
            .list(&ctx.caller, r.page_size, &r.page_token, &r.resource_type)
            .await
            .map(
                |(field_definitions, next_page_token)| ListFieldDefinitionsResponse {
                    field_definitions,
                    next_page_token,
                },
            );
        ctx.reply(result)
    }

    async fn update_field_definition(
        &self,
        request: Request<UpdateFieldDefinitionRequest>,
    ) -> Result<Response<FieldDefinition>, Status> {
        let ctx = Ctx::of(&request)?;
        let r = request.into_inner();
        let mask = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let result = match r.field_definition {
            Some(d) => self.fields.update(&ctx.caller, d, &mask).await,
            None => Err(invalid("field_definition", "is required")),
        };
        ctx.reply(result)
    }

    async fn delete_field_definition(
        &self,
        request: Request<DeleteFieldDefinitionRequest>,
    ) -> Result<Response<DeleteFieldDefinitionResponse>, Status> {
        let ctx = Ctx::of(&request)?;
        let r = request.into_inner();
        let result = self
            .fields
            .delete(&ctx.caller, &r.id)
            .await
            .map(|()| DeleteFieldDefinitionResponse {});
        ctx.reply(result)
    }

    async fn check_field_definition(
        &self,
        request: Request<CheckFieldDefinitionRequest>,
    ) -> Result<Response<CheckFieldDefinitionResponse>, Status> {
        let ctx = Ctx::of(&request)?;
        let r = request.into_inner();
        let mask = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let result = match r.field_definition {
            Some(d) => self.fields.check(&ctx.caller, d, &mask).await,
            None => Err(invalid("field_definition", "is required")),
        };
        ctx.reply(result)
    }
}
