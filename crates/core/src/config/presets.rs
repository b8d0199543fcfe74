//! The operation presets (`apis[].operations` as a name): the AzureML Studio (classic) web
//! service, an Azure ML online endpoint, and the OpenAI-compatible LLM APIs.

use super::schema::RawOperation;

/// The preset names, for the refusal of an unknown one.
pub(super) const NAMES: &str = "\"azureml-studio\", \"azureml-online\", \"openai\", \"azure-openai\"";

fn op(id: &str, name: &str, description: &str, method: &str, url_template: String, tokens: Option<&str>) -> RawOperation {
    RawOperation {
        id: id.into(),
        name: name.into(),
        description: Some(description.into()),
        method: method.into(),
        url_template,
        rate_limit: None,
        quota: None,
        tokens: tokens.map(Into::into),
    }
}

/// The operations of preset `name`, if there is one.
pub(super) fn operations(name: &str) -> Option<Vec<RawOperation>> {
    match name {
        "azureml-studio" => Some(azureml_studio()),
        "azureml-online" => Some(vec![op(
            "score",
            "Score",
            "Scores the request with the endpoint's deployment (the `azureml-model-deployment` header picks one).",
            "POST",
            "/score".into(),
            None,
        )]),
        "openai" => Some(llm("", "")),
        "azure-openai" => Some(llm("/openai/deployments/{deployment-id}", "?api-version={api-version}")),
        _ => None,
    }
}

/// The OpenAI-compatible operations under `base`, each URL ending in `query`.
fn llm(base: &str, query: &str) -> Vec<RawOperation> {
    vec![
        op(
            "chat-completions",
            "Chat completions",
            "A model response to a conversation (`messages`); `stream: true` answers with server-sent events.",
            "POST",
            format!("{base}/chat/completions{query}"),
            Some("chat"),
        ),
        op("completions", "Completions", "A completion of a `prompt`.", "POST", format!("{base}/completions{query}"), Some("completions")),
        op(
            "embeddings",
            "Embeddings",
            "Embedding vectors of the `input` texts.",
            "POST",
            format!("{base}/embeddings{query}"),
            Some("embeddings"),
        ),
        op("models", "Models", "The models this endpoint serves.", "GET", format!("{base}/models{query}"), None),
    ]
}

/// The five AzureML Studio (classic) web-service operations as APIM imports them.
fn azureml_studio() -> Vec<RawOperation> {
    const WS: &str = "/workspaces/{workspace}/services/{service}";
    let ws =
        |id: &str, name: &str, description: &str, method: &str, tail: &str| op(id, name, description, method, format!("{WS}{tail}"), None);
    // Names as in Microsoft's guide to AzureML Studio web services behind API Management.
    vec![
        ws(
            "rrs-execute",
            "RRS Execute",
            "Request-response: scores the rows in the request and answers with the results.",
            "POST",
            "/execute?api-version={apiversion}&details={details}",
        ),
        ws(
            "bes-submit",
            "BES Submit",
            "Batch execution: submits a job over blobs in Azure Storage; answers with the job id.",
            "POST",
            "/jobs?api-version={apiversion}",
        ),
        ws("bes-start", "BES Start", "Starts a submitted batch job.", "POST", "/jobs/{jobid}/start?api-version={apiversion}"),
        ws(
            "bes-status",
            "BES Status",
            "The status of a batch job and, once finished, where its outputs are.",
            "GET",
            "/jobs/{jobid}?api-version={apiversion}",
        ),
        ws(
            "bes-delete",
            "BES Delete",
            "Cancels a running batch job or deletes an ended one.",
            "DELETE",
            "/jobs/{jobid}?api-version={apiversion}",
        ),
    ]
}
