"""The fixed vocabulary of XDS.b on the wire: namespaces, SOAP actions, ebRIM UUIDs.

Kept in one place because every door (server, test-kit client, FHIR mapping) must
spell them identically; a typo here is a conformance failure everywhere.
"""

from __future__ import annotations

# --- Namespaces -------------------------------------------------------------------
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://www.w3.org/2005/08/addressing"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
XOP = "http://www.w3.org/2004/08/xop/include"
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
LCM = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
QUERY = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
XDSB = "urn:ihe:iti:xds-b:2007"
RMD = "urn:ihe:iti:rmd:2017"


# --- SOAP actions (request -> response) ---------------------------------------------
ACTION_PNR = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
ACTION_REGISTER = "urn:ihe:iti:2007:RegisterDocumentSet-b"
ACTION_RETRIEVE = "urn:ihe:iti:2007:RetrieveDocumentSet"
ACTION_STORED_QUERY = "urn:ihe:iti:2007:RegistryStoredQuery"
ACTION_UPDATE = "urn:ihe:iti:2010:UpdateDocumentSet"
ACTION_RESTRICTED_UPDATE = "urn:ihe:iti:2018:RestrictedUpdateDocumentSet"
ACTION_REMOVE_METADATA = "urn:ihe:iti:2010:DeleteDocumentSet"
ACTION_REMOVE_DOCUMENTS = "urn:ihe:iti:2017:RemoveDocuments"

RESPONSE_ACTIONS = {
    ACTION_PNR: "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-bResponse",
    ACTION_REGISTER: "urn:ihe:iti:2007:RegisterDocumentSet-bResponse",
    ACTION_RETRIEVE: "urn:ihe:iti:2007:RetrieveDocumentSetResponse",
    ACTION_STORED_QUERY: "urn:ihe:iti:2007:RegistryStoredQueryResponse",
    ACTION_UPDATE: "urn:ihe:iti:2010:UpdateDocumentSetResponse",
    ACTION_RESTRICTED_UPDATE: "urn:ihe:iti:2018:RestrictedUpdateDocumentSetResponse",
    ACTION_REMOVE_METADATA: "urn:ihe:iti:2010:DeleteDocumentSetResponse",
    ACTION_REMOVE_DOCUMENTS: "urn:ihe:iti:2017:RemoveDocumentsResponse",
}

# --- DSUB (ITI-52, ITI-53): WS-BaseNotification 1.3 over SOAP 1.2 ----------------------
WSNT = "http://docs.oasis-open.org/wsn/b-2"
WSRF_R = "http://docs.oasis-open.org/wsrf/r-2"
DSUB = "urn:ihe:iti:dsub:2009"
ACTION_SUBSCRIBE = "http://docs.oasis-open.org/wsn/bw-2/NotificationProducer/SubscribeRequest"
ACTION_SUBSCRIBE_RESPONSE = "http://docs.oasis-open.org/wsn/bw-2/NotificationProducer/SubscribeResponse"
ACTION_UNSUBSCRIBE = "http://docs.oasis-open.org/wsn/bw-2/SubscriptionManager/UnsubscribeRequest"
ACTION_UNSUBSCRIBE_RESPONSE = "http://docs.oasis-open.org/wsn/bw-2/SubscriptionManager/UnsubscribeResponse"
ACTION_NOTIFY = "http://docs.oasis-open.org/wsn/bw-2/NotificationConsumer/Notify"
RESPONSE_ACTIONS.update({ACTION_SUBSCRIBE: ACTION_SUBSCRIBE_RESPONSE, ACTION_UNSUBSCRIBE: ACTION_UNSUBSCRIBE_RESPONSE})
TOPIC_DIALECT_SIMPLE = "http://docs.oasis-open.org/wsn/t-1/TopicExpression/Simple"
TOPIC_DIALECT_CONCRETE = "http://docs.oasis-open.org/wsn/t-1/TopicExpression/Concrete"
TOPIC_FULL_DOCUMENT_ENTRY = "FullDocumentEntry"
TOPIC_MINIMAL_DOCUMENT_ENTRY = "MinimalDocumentEntry"
TOPIC_SUBMISSION_SET = "SubmissionSetMetadata"
# ITI-52 subscription filters: the rim:AdhocQuery id of the wsnt:Filter (ITI TF-2 3.52.5,
# the DSUB Extensions supplement for the patient-independent ones).
DSUB_QUERIES = {
    "urn:uuid:aa2332d0-f8fe-11e0-be50-0800200c9a66": "SubscriptionForDocumentEntry",
    "urn:uuid:742790e0-aba6-43d6-9f1f-e43ed9790b79": "SubscriptionForPatientIndependentDocumentEntry",
    "urn:uuid:fbede94e-dbdc-4f6b-bc1f-d730e677cece": "SubscriptionForSubmissionSet",
    "urn:uuid:868cad3d-ec09-4565-b66c-1be10d034399": "SubscriptionForPatientIndependentSubmissionSet",
    "urn:uuid:9376254e-da05-41f5-9af3-ac56d63d8ebd": "SubscriptionForFolder",
}

# --- Response status and error severity ----------------------------------------------
STATUS_SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
STATUS_FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"
STATUS_PARTIAL = "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess"
SEVERITY_ERROR = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"
SEVERITY_WARNING = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Warning"

# --- Object types and classification nodes -------------------------------------------
OBJECT_TYPE_STABLE = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
OBJECT_TYPE_ON_DEMAND = "urn:uuid:34268e47-fdf5-41a6-ba33-82133c465248"
NODE_SUBMISSION_SET = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
NODE_FOLDER = "urn:uuid:d9d542f3-6cc4-48b6-8870-ea235fbc94c2"
OBJECT_TYPE_REGISTRY_PACKAGE = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:RegistryPackage"
OBJECT_TYPE_ASSOCIATION = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Association"
OBJECT_TYPE_CLASSIFICATION = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Classification"
OBJECT_TYPE_EXTERNAL_IDENTIFIER = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:ExternalIdentifier"

# Classification schemes, by the model attribute they carry.
DOC_AUTHOR = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"
DOC_CODE_SCHEMES = {
    "class_code": "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a",
    "confidentiality_codes": "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f",
    "event_codes": "urn:uuid:2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4",
    "format_code": "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d",
    "healthcare_facility_type_code": "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1",
    "practice_setting_code": "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead",
    "type_code": "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983",
}
DOC_LIMITED_METADATA = "urn:uuid:ab9b591b-83ab-4d03-8f5d-f93b1fb92e85"
DOC_PATIENT_ID = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
DOC_UNIQUE_ID = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"

SS_AUTHOR = "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d"
SS_CONTENT_TYPE = "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500"
SS_LIMITED_METADATA = "urn:uuid:5003a9db-8d8d-49e6-bf0c-990e34ac7707"
SS_PATIENT_ID = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"
SS_SOURCE_ID = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832"
SS_UNIQUE_ID = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"

FOLDER_CODE_LIST = "urn:uuid:1ba97051-7806-41a8-a48b-8fce7af683c5"
FOLDER_LIMITED_METADATA = "urn:uuid:2c144a76-29a9-4b7c-af54-b25409fe7d03"
FOLDER_PATIENT_ID = "urn:uuid:f64ffdf0-4b97-4e06-b79f-a52b38ec2f8a"
FOLDER_UNIQUE_ID = "urn:uuid:75df8f67-9973-4fbe-a900-df66cefecc5a"

ASSOCIATION_DOCUMENTATION = "urn:uuid:abd807a3-4432-4053-87b4-fd82c643d1f3"

# --- Stored queries -------------------------------------------------------------------
STORED_QUERIES = {
    "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d": "FindDocuments",
    "urn:uuid:12941a89-e02e-4be5-967c-ce4bfc8fe492": "FindDocumentsByReferenceId",
    "urn:uuid:f26abbcb-ac74-4422-8a30-edb644bbc1a9": "FindSubmissionSets",
    "urn:uuid:958f3006-baad-4929-a4de-ff1114824431": "FindFolders",
    "urn:uuid:10b545ea-725c-446d-9b95-8aeb444eddf3": "GetAll",
    "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4": "GetDocuments",
    "urn:uuid:5737b14c-8a1a-4539-b659-e03a34a5e1e4": "GetFolders",
    "urn:uuid:a7ae438b-4bc2-4642-93e9-be891f7bb155": "GetAssociations",
    "urn:uuid:bab9529a-4a10-40b3-a01f-f68a615d247a": "GetDocumentsAndAssociations",
    "urn:uuid:51224314-5390-4169-9b91-b1980040715a": "GetSubmissionSets",
    "urn:uuid:e8e3cb2c-e39c-46b9-99e4-c12f57260b83": "GetSubmissionSetAndContents",
    "urn:uuid:b909a503-523d-4517-8acf-8e5834dfc4c7": "GetFolderAndContents",
    "urn:uuid:10cae35a-c7f9-4cf5-b61e-fc3278ffb578": "GetFoldersForDocument",
    "urn:uuid:d90e5407-b356-4d91-a89f-873917b4b0e6": "GetRelatedDocuments",
}
STORED_QUERY_IDS = {name: uuid for uuid, name in STORED_QUERIES.items()}

# --- Association types and availability status (full URNs) -----------------------------
ASSOCIATION_TYPE_EBRS = "urn:oasis:names:tc:ebxml-regrep:AssociationType:"
ASSOCIATION_TYPE_IHE = "urn:ihe:iti:2007:AssociationType:"
ASSOCIATION_HAS_MEMBER = ASSOCIATION_TYPE_EBRS + "HasMember"
STATUS_TYPE = "urn:oasis:names:tc:ebxml-regrep:StatusType:"
STATUS_APPROVED = STATUS_TYPE + "Approved"
STATUS_DEPRECATED = STATUS_TYPE + "Deprecated"
