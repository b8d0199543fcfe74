//! What the OpenAPI export knows about the operation presets: request bodies, 200 answers,
//! backend errors and the schemas they name. The JSON text is `presets.txt`, packed by
//! `build.rs` (the `.wasm` carries a third of it) and unpacked once per export ([`Text`]).
//!
//! An operation is a preset's when the API is the `azureml-studio` preset, or the operation
//! carries tokens (its kind names it: `chat-completions`, `completions`, `embeddings`), or it is
//! `models` beside one that does, or it is `score` without tokens (`azureml-online`).

use super::unpack::unpack;
use mlgate_core::model::{Api, Operation, TokenOp};

/// Where a fragment of `presets.txt` is in the unpacked text: start and length.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Frag(usize, usize);

include!(concat!(env!("OUT_DIR"), "/presets.rs"));

/// The unpacked text of `presets.txt`.
pub(crate) struct Text(String);

impl Text {
    pub(crate) fn new() -> Text {
        Text(String::from_utf8(unpack(&PACKED, UNPACKED_LEN)).unwrap_or_default())
    }

    /// A fragment: JSON text, as `presets.txt` has it.
    pub(crate) fn get(&self, f: Frag) -> &str {
        self.0.get(f.0..f.0.saturating_add(f.1)).unwrap_or("null")
    }
}

/// The backends the presets front.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    /// AzureML Studio (classic) web services.
    Studio,
    /// An Azure ML managed online endpoint (`POST /score`).
    Online,
    /// OpenAI-compatible LLM APIs (`openai`, `azure-openai`).
    OpenAi,
}

impl Family {
    /// The schema of a status both the gateway and the backend answer, and the backend's
    /// `default` answer.
    pub(crate) fn errors(self) -> (Frag, Frag) {
        match self {
            Family::Studio => (AZUREML_OR_GATEWAY, STUDIO_DEFAULT),
            Family::Online => (AZUREML_OR_GATEWAY, ONLINE_DEFAULT),
            Family::OpenAi => (OPENAI_OR_GATEWAY, OPENAI_DEFAULT),
        }
    }
}

/// One preset operation: its request body (if it has one) and 200 answer.
pub(crate) struct PresetOp {
    id: &'static str,
    pub(crate) family: Family,
    pub(crate) request: Option<Frag>,
    pub(crate) ok: Frag,
}

/// The preset entry of `op` of `api`, if it is a preset's.
pub(crate) fn of(api: &Api, op: &Operation) -> Option<&'static PresetOp> {
    let id = match op.tokens {
        Some(TokenOp::Chat) => "chat-completions",
        Some(TokenOp::Completions) => "completions",
        Some(TokenOp::Embeddings) => "embeddings",
        None if api.azureml_studio || op.id == "score" => op.id.as_str(),
        None if op.id == "models" && api.operations.iter().any(|o| o.tokens.is_some()) => "models",
        None => return None,
    };
    PRESET.iter().find(|p| p.id == id)
}

/// The schemas the operations of `api` name, as members of `components.schemas`.
pub(crate) fn schemas(api: &Api) -> impl Iterator<Item = Frag> {
    let has = |f: Family| api.operations.iter().any(|op| of(api, op).is_some_and(|p| p.family == f));
    let (studio, online, openai) = (has(Family::Studio), has(Family::Online), has(Family::OpenAi));
    [(studio || online, AZUREML_ERROR), (studio, STUDIO_SCHEMAS), (online, SCORE_SCHEMAS), (openai, OPENAI_SCHEMAS)]
        .into_iter()
        .filter_map(|(on, f)| on.then_some(f))
}

/// What a preset says about a template parameter: description, fixed values, default.
pub(crate) fn param(name: &str) -> (&'static str, &'static [&'static str], Option<&'static str>) {
    match name {
        "workspace" => ("The AzureML workspace id.", &[], None),
        "service" => ("The web service id.", &[], None),
        "jobid" => ("The batch job id that BES Submit answered.", &[], None),
        "apiversion" => ("The AzureML API version: 2.0.", &["2.0"], Some("2.0")),
        "details" => ("true: the output carries column names and types.", &["true", "false"], Some("true")),
        "deployment-id" => ("The name of the model deployment (Azure OpenAI).", &[], None),
        "api-version" => ("The Azure OpenAI API version (YYYY-MM-DD, or with -preview).", &[], Some("2024-10-21")),
        _ => ("", &[], None),
    }
}

const fn op(id: &'static str, family: Family, request: Option<Frag>, ok: Frag) -> PresetOp {
    PresetOp { id, family, request, ok }
}

const PRESET: [PresetOp; 10] = [
    op("rrs-execute", Family::Studio, Some(RRS_EXECUTE_REQUEST), RRS_EXECUTE_OK),
    op("bes-submit", Family::Studio, Some(BES_SUBMIT_REQUEST), BES_SUBMIT_OK),
    op("bes-start", Family::Studio, None, BES_START_OK),
    op("bes-status", Family::Studio, None, BES_STATUS_OK),
    op("bes-delete", Family::Studio, None, BES_DELETE_OK),
    op("score", Family::Online, Some(SCORE_REQUEST), SCORE_OK),
    op("chat-completions", Family::OpenAi, Some(CHAT_REQUEST), CHAT_OK),
    op("completions", Family::OpenAi, Some(COMPLETIONS_REQUEST), COMPLETIONS_OK),
    op("embeddings", Family::OpenAi, Some(EMBEDDINGS_REQUEST), EMBEDDINGS_OK),
    op("models", Family::OpenAi, None, MODELS_OK),
];
