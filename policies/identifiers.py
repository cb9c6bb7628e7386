"""The MLOps identifiers no redactor may touch: names, ids, digests, versions, paths, numbers.

A detector that reads shapes (a phone number in ``0.9530706587432183``, a person in
``roc_auc``, a card inside a float, a date in a run's timestamp) is asked here before its
finding counts: ``is_benign_identifier`` says whether a whole token is one of these
identifiers, and ``token_around`` finds the token a finding sits in. Standard library only:
the secret scanner and the redactor both import it, and neither may load a model for it.
"""

from __future__ import annotations

import re

__all__ = ["ML_TERMS", "is_benign_identifier", "is_ml_term", "token_around"]

# Characters that end a token: whitespace, quotes, brackets, separators of key=value pairs.
_TOKEN_STOP = frozenset(" \t\r\n\"'`()[]{}<>,;=|\\")

_BENIGN = re.compile(
    r"""
    (?:sha(?:1|224|256|384|512)|md5|blake2b?):[0-9a-f]{16,}         # key fingerprints, content digests
    | (?-i:(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,})        # run ids, git shas, signatures (lower-case hex)
    | (?-i:[a-z]{1,4}-(?=[0-9a-f]*[0-9])[0-9a-f]{8,})               # model ids m-<hex>, thread ids t-<hex>
    | [0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}   # UUIDs
    | [-+]?(?:\d+\.\d*|\.\d+)(?:e[-+]?\d+)?%?                       # floats: 0.9530706587432183, 1e-05
    | [-+]?\d+e[-+]?\d+
    | v\d+(?:\.\d+){0,3}(?:[-+.][0-9a-z.]+)?                          # versions: v3, v1.2.3-rc1
    | \d{1,3}\.\d{1,3}(?:\.\d{1,3})?(?:[-+][0-9a-z.]+|(?:a|b|rc|dev|post)\d*)?  # 1.26.4, 2.0rc1
    | \d{4}\.\d{1,2}(?:\.\d{1,3})?                                   # calendar versions
    | \d{4}-\d{2}-\d{2}(?:[t_ ]\d{2}[:-]?\d{2}(?:[:-]?\d{2}(?:[.,]\d+)?)?(?:z|[-+]\d{2}:?\d{2})?)?  # ISO times
    | \d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?                              # clock times in log lines
    | \d{8}t\d{6}z?                                                  # compact timestamps
    | (?:127(?:\.\d{1,3}){3}|0\.0\.0\.0|::1?|localhost)(?::\d{1,5})?  # loopback and unspecified addresses
    """,
    re.VERBOSE | re.IGNORECASE,
)

# Names: snake_case (roc_auc, max_depth), dotted (metrics.roc_auc, sklearn.linear_model), DNS-1123
# names of Kubernetes objects with a dash (churn-model-v3-7f9c6d5b8-x2k4q) and CamelCase class
# names long enough not to be a surname (LogisticRegression; "McConnan" is not spared).
_NAME = re.compile(
    r"""
    [a-z][a-z0-9]*(?:[_.][a-z0-9]+)+
    | [a-z][a-z0-9]*(?:-[a-z0-9]+)+(?:\.[a-z0-9]+(?:-[a-z0-9]+)*)*
    | [A-Z][a-z0-9]+(?:[A-Z][a-z0-9]+){2,}
    | [A-Z][a-z0-9]{3,}[A-Z][a-z0-9]{4,}
    | [A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*){2,}
    """,
    re.VERBOSE,
)
# Image references and URIs without credentials: registry/repo:tag@sha256:..., models:/churn@champion,
# mlflow-artifacts:/1/<run>/artifacts, s3://bucket/key, file paths in a workspace.
_REFERENCE = re.compile(
    r"""
    (?=[^/]*[a-z])[a-z0-9][a-z0-9._-]*(?::\d+)?(?:/[a-z0-9._-]+)+(?::[a-z0-9._-]+)?(?:@sha256:[0-9a-f]{64})?
    | [a-z][a-z0-9+.-]*:/{1,3}\S*
    | (?:~|\.{1,2}|[a-z]:)?(?:[/\\][\w.@+~-]+)+[/\\]?
    | (?=[^/]*[a-z])[\w.-]+(?:/[\w.@+-]+)+
    """,
    re.VERBOSE | re.IGNORECASE,
)

ML_TERMS: frozenset[str] = frozenset(
    [
        "adam", "adamw", "adagrad", "adadelta", "rmsprop", "nesterov", "xavier", "glorot", "kaiming", "lecun", "gini",
        "jaccard", "pearson", "spearman", "kendall", "kolmogorov", "smirnov", "wasserstein", "jensen", "shannon",
        "kullback", "leibler", "hellinger", "bhattacharyya", "mahalanobis", "euclidean", "manhattan", "chebyshev",
        "minkowski", "hamming", "levenshtein", "cosine", "bayes", "bayesian", "gauss", "gaussian", "poisson",
        "bernoulli", "binomial", "huber", "tweedie", "brier", "matthews", "cohen", "fisher", "student", "welch",
        "wilcoxon", "mann", "whitney", "kruskal", "wallis", "anderson", "darling", "shapiro", "wilk", "lasso", "ridge",
        "elasticnet", "shapley", "shap", "lime", "newton", "lagrange", "markov", "monte", "carlo", "dirichlet",
        "laplace", "cauchy", "weibull", "boltzmann", "gumbel", "softmax", "relu", "gelu", "xgboost", "lightgbm",
        "catboost", "optuna", "hyperopt", "mlflow", "kubernetes", "docker", "helm", "seldon", "kserve", "knative",
        "evidently", "prometheus", "grafana", "alertmanager", "airflow", "kubeflow", "ray", "dask", "spark", "pandas",
        "numpy", "scipy", "sklearn", "keras", "torch", "pytorch", "tensorflow", "onnx", "triton", "fastapi", "uvicorn",
        "starlette", "pydantic", "langgraph", "langchain", "presidio", "spacy", "hugging", "face", "huggingface",
        "bert", "roberta", "gpt", "llama", "mistral", "claude", "gemini", "openai", "anthropic", "argo", "tekton",
        "jenkins", "github", "gitlab", "bitbucket", "terraform", "ansible", "redis", "postgres", "postgresql", "mysql",
        "sqlite", "minio", "kafka", "rabbitmq", "celery", "nginx", "istio", "envoy", "linkerd", "datadog", "sentry",
        "sha1", "sha224", "sha256", "sha384", "sha512", "md5", "blake2b", "crc32", "hmac", "ed25519", "rsa", "ecdsa",
    ]
)  # fmt: skip
"""Method, library and tool names that read as people's or places' names to a NER model."""

_WORD = re.compile(r"[^\W\d_]+")


def is_benign_identifier(token: str) -> bool:
    """Whether the whole ``token`` is an MLOps identifier (id, digest, version, number, name, path)."""
    if _BENIGN.fullmatch(token):  # before the strip: '::1' is loopback, not '1'
        return True
    token = token.strip(".:")
    if not token:
        return False
    return bool(_BENIGN.fullmatch(token) or _NAME.fullmatch(token) or _is_reference(token))


def _is_reference(token: str) -> bool:
    if "/" not in token and "\\" not in token:
        return False
    if "@" in token and not token.startswith(("/", "~", ".")) and "://" not in token and ":/" not in token:
        # 'jane@example.com/x' is an address with a tail, not a path; 'models:/churn@champion' is a URI
        return False
    return bool(_REFERENCE.fullmatch(token))


def is_ml_term(text: str) -> bool:
    """Whether every word of ``text`` names a method, library or tool (``Jensen-Shannon``, ``Adam``)."""
    words = _WORD.findall(text)
    return bool(words) and all(w.lower() in ML_TERMS for w in words)


def token_around(text: str, start: int, end: int) -> str:
    """The whitespace-, quote- and bracket-delimited token that contains ``text[start:end]``."""
    while start > 0 and text[start - 1] not in _TOKEN_STOP:
        start -= 1
    while end < len(text) and text[end] not in _TOKEN_STOP:
        end += 1
    return text[start:end].rstrip(".,:;!?")
